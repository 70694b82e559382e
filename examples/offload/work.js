/**
 * The slow function of the offload demo: keeps one core busy for `ms` milliseconds (a
 * stand-in for real work: parsing, hashing, rendering) and returns how many rounds of a
 * small hash it managed.
 * @param {number} ms
 * @returns {number}
 */
export function work(ms) {
  const until = performance.now() + ms;
  let rounds = 0;
  let h = 2166136261;
  while (performance.now() < until) {
    for (let i = 0; i < 1000; i++) h = Math.imul(h ^ i, 16777619);
    rounds++;
  }
  return h === 0 ? -rounds : rounds;
}

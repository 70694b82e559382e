/**
 * The work of the digits demo, shared by the plain loop and the stage: the sum of the
 * decimal digits in `bytes` (ASCII '0' to '9'), computed `cost` times over, so that the
 * work per byte can be made as heavy as the original's without changing the sum.
 * @param {Uint8Array} bytes
 * @param {number} cost
 * @returns {number}
 */
export function sumDigits(bytes, cost) {
  let sum = 0;
  for (let k = 0; k < cost; k++) {
    sum = 0;
    for (let i = 0; i < bytes.length; i++) sum += bytes[i] - 48;
  }
  return sum;
}

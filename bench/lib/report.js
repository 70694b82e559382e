// Plain-text tables and number formats for the terminal report.

/**
 * Formats rows as an aligned table: the first column left-aligned, the rest
 * right-aligned, a rule under the header. A row given as `{ first, note }` prints its
 * first cell aligned and then the note in place of the figures.
 * @param {string[]} header
 * @param {(string[] | { first: string, note: string })[]} rows
 */
export function table(header, rows) {
  const cells = rows.filter((row) => Array.isArray(row));
  const firsts = rows.map((row) => (Array.isArray(row) ? (row[0] ?? '') : row.first));
  const widths = header.map((h, i) =>
    Math.max(h.length, ...(i === 0 ? firsts : cells.map((row) => row[i] ?? '')).map((cell) => cell.length)),
  );
  const line = (row) =>
    row
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [
    line(header),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map((row) => (Array.isArray(row) ? line(row) : `${row.first.padEnd(widths[0] ?? 0)}  ${row.note}`)),
  ].join('\n');
}

/** @param {number | null | undefined} ms */
export function latency(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 1) return `${(ms * 1000).toFixed(0)}us`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 2 : 1)}ms`;
  return `${(ms / 1000).toFixed(2)}s`;
}

/** @param {number | null | undefined} value */
export function rate(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);
}

/** @param {number | null | undefined} bytes */
export function mebibytes(bytes) {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '-';
  return `${(bytes / 1048576).toFixed(1)}MiB`;
}

/** @param {number | null | undefined} seconds */
export function cpu(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '-';
  return `${seconds.toFixed(2)}s`;
}

/** @param {number | null | undefined} value */
export function ratio(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  return `${value.toFixed(2)}x`;
}

/** @param {number | null | undefined} value */
export function count(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  return String(value);
}

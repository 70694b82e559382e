// Writes the option table generated from the option schema into README.md, between the
// `options:start` and `options:end` markers. Run after `npm run build`: `npm run docs`.
import { readFileSync, writeFileSync } from 'node:fs';
import { optionsTable } from '../dist/cli/help.js';

const path = new URL('../README.md', import.meta.url);
const readme = readFileSync(path, 'utf8');
const start = '<!-- options:start -->\n';
const end = '<!-- options:end -->';
const from = readme.indexOf(start);
const to = readme.indexOf(end);
if (from === -1 || to < from) throw new Error('README.md has no options:start/options:end markers');
writeFileSync(path, `${readme.slice(0, from + start.length)}${optionsTable()}\n${readme.slice(to)}`);

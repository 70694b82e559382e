import { availableParallelism } from 'node:os';
import { COMMAND_NAMES, type OptionName, SECTIONS, envOf, fieldOf, flagOf, specOf } from '../options.js';
import { BUILTIN_STAGES } from '../stages/index.js';
import { DAEMON_OPTIONS } from './settings.js';

const WIDTH = 100;
const FLAG_COLUMN = 28;

/** How an option's default reads for people. */
export function defaultText(name: OptionName): string | undefined {
  const spec = specOf(name);
  if (spec.defaultText !== undefined) return spec.defaultText;
  const value = spec.default;
  if (value === undefined || typeof value === 'boolean') return undefined;
  return Array.isArray(value) ? value.join(',') : String(value);
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** One option's lines in `--help`. */
function optionLines(name: OptionName): string[] {
  const spec = specOf(name);
  const head = `  --${flagOf(name)}${spec.arg === undefined ? '' : ` ${spec.arg}`}`;
  const text = defaultText(name);
  const commands = spec.commands!;
  const where = spec.section === 'General (every command)' || spec.section === 'Admin port' ? '' : ` [${commands.map((c) => (c === 'serve' ? 'butterflyd' : c)).join(', ')}]`;
  const doc = `${spec.doc}${text === undefined ? '' : ` (default ${text})`}${where}`;
  const body = wrap(doc, WIDTH - FLAG_COLUMN);
  const lines: string[] = [];
  if (head.length + 1 < FLAG_COLUMN) lines.push(head.padEnd(FLAG_COLUMN) + body.shift()!);
  else lines.push(head);
  for (const rest of body) lines.push(' '.repeat(FLAG_COLUMN) + rest);
  return lines;
}

/** `butterflyd --help`: the usage, then every option of the schema by section. */
export function helpText(version: string): string {
  const sections = SECTIONS.map((section) => {
    const names = DAEMON_OPTIONS.filter((name) => specOf(name).section === section);
    const extra =
      section === 'General (every command)'
        ? [
            '  --config FILE             JSON file of settings, fields named as the flags in camel case',
            '                            ("port", "maxMessageBytes", ...); also BUTTERFLY_CONFIG',
          ]
        : [];
    const tail = section === 'General (every command)' ? ['  -h, --help                print this help', '  -v, --version             print the version'] : [];
    return [`${section}:`, ...extra, ...names.flatMap(optionLines), ...tail].join('\n');
  });
  return `butterflyd ${version}: pipelined worker-layer HTTP server

Usage:
  butterflyd [options]                      the whole pipeline (default: is_prime) with its HTTP front end,
                                            proxies and worker pools in one process tree
  butterflyd simulate COUNT [options]       send COUNT requests through the pipeline without HTTP, the
                                            target's {n} replaced by 1 to COUNT; print the answers and the rate
  butterflyd server --loopback ADDR --stages ADDR,ADDR,... [options]
                                            split mode: the HTTP front end alone; it binds the loopback
                                            and sends jobs to stage 1's proxy at the first ADDR
  butterflyd proxy --stage-index I --frontend ADDR --backend ADDR [--next ADDR] --loopback ADDR [options]
                                            split mode: the load balancer of one stage
  butterflyd worker --stage NAME|FILE --connect ADDR [--workers N] [options]
                                            a worker of one stage (or a pool of N) joining the proxy at ADDR;
                                            start more at any time to add capacity, SIGTERM one to remove it
  butterflyd keygen NAME                    write a CURVE key pair: NAME.key (public, for peers' --curve-allow
                                            and --curve-server-key) and NAME.key_secret (mode 0600, --curve-key)

Addresses (ADDR) are ZeroMQ endpoints: ipc://PATH (one host) or tcp://HOST:PORT. A server or
proxy binding tcp:// on an address other than loopback needs --curve-key and --curve-allow
(or --insecure). Built-in
stages: ${Object.keys(BUILTIN_STAGES).join(', ')}. ${COMMAND_NAMES.serve} and simulate run ${availableParallelism()} workers
per stage by default (the number of cores).

${sections.join('\n\n')}

Every option can also be set by an environment variable, BUTTERFLY_ and the flag in upper
snake case (BUTTERFLY_PORT, BUTTERFLY_HOST, BUTTERFLY_ENGINE, BUTTERFLY_WORKERS,
BUTTERFLY_LOG_LEVEL, BUTTERFLY_ADMIN_PORT, ...), or a field of the --config file. Flags win
over the environment, the environment over the file. All addresses bind to 127.0.0.1
unless told otherwise. SIGTERM or SIGINT drains and exits 0; a second signal exits at once.
`;
}

/**
 * The README's option table: every option the daemon takes, with its flag, variable,
 * config field, name in code, default, commands and meaning. A test keeps the README's copy equal to it.
 */
export function optionsTable(): string {
  const rows = DAEMON_OPTIONS.map((name) => {
    const spec = specOf(name);
    const commands = spec.commands!.map((c) => (c === 'serve' ? 'butterflyd' : c)).join(', ');
    const text = defaultText(name) ?? (spec.default === undefined ? '' : String(spec.default));
    const cell = (s: string): string => s.replace(/\|/g, '\\|');
    const flag = `--${flagOf(name)}${spec.arg === undefined ? '' : ` ${spec.arg}`}`;
    return `| \`${cell(flag)}\` | \`${envOf(name)}\` | \`${fieldOf(name)}\` | \`${name}\` | ${cell(text)} | ${commands} | ${cell(spec.doc)} |`;
  });
  return ['| Flag | Environment | Config field | In code | Default | Commands | Meaning |', '|---|---|---|---|---|---|---|', ...rows].join('\n');
}

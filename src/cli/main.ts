/**
 * butterflyd: the daemon. Maps flags, environment variables and the config file to
 * options; the only place that reads argv and the environment.
 *
 *   butterflyd [options]                       the whole pipeline in one process tree
 *   butterflyd simulate COUNT [options]        check 1..COUNT through the pipeline, no HTTP
 *   butterflyd server | proxy | worker ...     split mode: one part per process
 *   butterflyd keygen NAME                     a CURVE key pair for split mode's links
 */
import { readFileSync } from 'node:fs';
import { keygen, proxy, serve, server, simulate, worker } from './commands.js';
import { helpText } from './help.js';
import { UsageError, readInvocation } from './settings.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'keygen') return keygen(argv.slice(1));
  const { command, positionals, help, version, settings } = readInvocation(argv, process.env, process.cwd());
  if (help) {
    process.stdout.write(helpText(VERSION));
    return;
  }
  if (version) {
    process.stdout.write(`${VERSION}\n`);
    return;
  }
  switch (command) {
    case 'serve':
      return serve(settings);
    case 'simulate':
      if (positionals.length > 1) throw new UsageError(`simulate takes one COUNT, got ${positionals.join(' ')}`);
      return simulate(settings, positionals[0]);
    case 'server':
      return server(settings);
    case 'proxy':
      return proxy(settings);
    case 'worker':
      return worker(settings);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    console.error(`butterflyd: ${err.message}`);
    process.exit(2);
  }
  const message = err instanceof Error ? err.message : String(err);
  console.error(`butterflyd: ${message}`);
  process.exit(1);
});

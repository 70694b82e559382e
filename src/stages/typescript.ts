import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { StageLoadError } from '../errors.js';

/**
 * TypeScript stages, compiled once by the process that starts the workers: esbuild bundles
 * the stage module with its local imports into one JavaScript file, its types stripped,
 * not checked (that is the author's editor's business), each file keeping its own
 * `import.meta.url`; packages stay imports, rewritten
 * to the absolute URLs they resolve to from the stage's folder, so the file runs from
 * anywhere and shares the workers' own copy of butterfly. Workers import that file as
 * plain JavaScript: no loader, no compiler, no start-up cost of their own. esbuild is an
 * optional peer dependency, loaded only for a TypeScript stage.
 */

/** A TypeScript module, by its extension. */
export const TYPESCRIPT = /\.[mc]?ts$/;

interface Esbuild {
  build(options: Record<string, unknown>): Promise<{ outputFiles: { text: string }[] }>;
}

interface EsbuildMessage {
  readonly text: string;
  readonly location: { readonly file: string; readonly line: number; readonly column: number } | null;
}

const BUILTIN = new Set(builtinModules);

/**
 * Compiles a TypeScript stage module and returns the file URL of the JavaScript to import
 * in its place, under the system's temporary folder, named by its content (compiled again
 * at each start, written only when new).
 * @throws StageLoadError naming the file and line of a syntax error, or saying to install esbuild.
 */
export async function compileTypeScript(module: string): Promise<string> {
  let esbuild: Esbuild;
  try {
    esbuild = (await import('esbuild')) as unknown as Esbuild;
  } catch {
    throw new StageLoadError(`${module} is TypeScript: install esbuild beside butterfly (npm install esbuild) to run TypeScript stages`);
  }
  const entry = module.startsWith('file:') ? fileURLToPath(module) : module;
  let code: string;
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      sourcemap: 'inline',
      logLevel: 'silent',
      plugins: [packagesByUrl()],
    });
    code = result.outputFiles[0]!.text;
  } catch (err) {
    const first = (err as { errors?: EsbuildMessage[] }).errors?.[0];
    const where = first?.location === null || first?.location === undefined ? entry : `${first.location.file}:${first.location.line}:${first.location.column}`;
    throw new StageLoadError(`cannot compile ${where}: ${first?.text ?? (err as Error).message}`);
  }
  const folder = join(tmpdir(), 'butterfly-stages');
  const file = join(folder, `${createHash('sha256').update(entry).update('\0').update(code).digest('hex').slice(0, 24)}.mjs`);
  if (!existsSync(file)) {
    mkdirSync(folder, { recursive: true });
    // Written whole, then renamed: a worker starting meanwhile never reads half a file.
    const partial = `${file}.${process.pid}.tmp`;
    writeFileSync(partial, code);
    renameSync(partial, file);
  }
  return pathToFileURL(file).href;
}

/** esbuild's loader for each source extension. */
const LOADERS: Readonly<Record<string, string>> = { '.ts': 'ts', '.mts': 'ts', '.cts': 'ts', '.tsx': 'tsx', '.jsx': 'jsx' };

/**
 * An esbuild plugin that leaves packages as imports of the absolute URLs they resolve to,
 * and gives each bundled file its own `import.meta.url`.
 */
function packagesByUrl(): Record<string, unknown> {
  return {
    name: 'butterfly-packages-by-url',
    setup(build: {
      onLoad(filter: { filter: RegExp }, callback: (args: { path: string }) => Promise<unknown>): void;
      onResolve(filter: { filter: RegExp }, callback: (args: { path: string; kind: string; resolveDir: string; pluginData?: unknown }) => Promise<unknown>): void;
      resolve(path: string, options: { kind: string; resolveDir: string; pluginData: unknown }): Promise<{ path: string; errors: unknown[] }>;
    }): void {
      // Each bundled file keeps its own location in `import.meta.url`, for files it reads beside itself.
      build.onLoad({ filter: /\.[mc]?[jt]sx?$/ }, async (args) => {
        const source = await readFile(args.path, 'utf8');
        const contents = source.includes('import.meta.url') ? source.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)) : source;
        return { contents, loader: LOADERS[extname(args.path)] ?? 'js' };
      });
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.pluginData === 'resolving' || args.path.startsWith('node:') || BUILTIN.has(args.path)) return undefined;
        const resolved = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: 'resolving' });
        if (resolved.errors.length > 0) return { errors: resolved.errors };
        return { path: pathToFileURL(resolved.path).href, external: true };
      });
    },
  };
}

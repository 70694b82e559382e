import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The example plugin under examples/ depends on butterfly as `file:../..`; `npm install`
 * there makes node_modules/butterfly a link to this package. The suite makes the same link,
 * so that the example's stages and tests run against this checkout without an install.
 */
export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const modules = join(root, 'examples', 'greeter', 'node_modules');
  const link = join(modules, 'butterfly');
  if (existsSync(link)) return;
  mkdirSync(modules, { recursive: true });
  symlinkSync(join('..', '..', '..'), link, 'dir');
}

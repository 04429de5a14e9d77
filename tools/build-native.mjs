// Builds src/protocol/shm.c into build/shm.node, the optional addon that maps the bulk regions
// (src/protocol/shm.ts). Runs at `npm ci` (package.json's "install" script) and never fails it: without a C
// compiler or Node's headers it says why in one line and trainpool uses read/write for the regions.
//   node tools/build-native.mjs          # again after editing shm.c;  CC=clang to choose the compiler
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const source = path.join(root, 'src/protocol/shm.c');
const out = path.join(root, 'build/shm.node');
// Node's own tarball ships its headers next to the binary (include/node); N-API's are the same in every version.
const headers = [path.join(path.dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node'].find((d) => existsSync(path.join(d, 'node_api.h')));

function skip(why) {
  console.log(`trainpool: shared-memory addon not built (${why}); bulk regions use read/write instead`);
  process.exit(0);
}

if (process.platform !== 'linux') skip(`${process.platform} is not Linux`);
if (!headers) skip("Node's headers (node_api.h) not found next to the node binary");
const cc = process.env.CC || 'cc';
mkdirSync(path.dirname(out), { recursive: true });
const tmp = `${out}.${process.pid}.tmp`;
try {
  execFileSync(cc, ['-O2', '-Wall', '-shared', '-fPIC', `-I${headers}`, source, '-o', tmp], { stdio: ['ignore', 'inherit', 'inherit'] });
} catch (e) {
  skip(e.code === 'ENOENT' ? `no C compiler: ${cc} not found` : `${cc} failed`);
}
renameSync(tmp, out);
console.log(`trainpool: built ${path.relative(root, out)}`);

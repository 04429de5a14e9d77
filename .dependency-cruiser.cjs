/**
 * The architecture of src/, checked by dependency-cruiser: `npm run lint:deps`, and
 * test/architecture.test.ts (so `npm test` and CI), which loads this same file: the one place the rules live.
 *
 * The layers, lowest first; a module may import from its own folder and from the folders listed:
 *
 *   src/util/**         nothing else in src
 *   src/engine/**       util                      (what makes tfjs compute)
 *   src/data/**         util
 *   src/model/**        engine, data, util
 *   src/protocol/**     model, engine, util
 *   src/config/**       data, engine, model, util      (the run configuration)
 *   src/worker/**       protocol, model, engine, data, util                    (the child process)
 *   src/coordinator/**  config, protocol, model, engine, data, util            (the main process)
 *   src/cli/**          anything in src but index.ts
 *   src/index.ts        anything                                               (the public library API)
 *
 * Packages and node: builtins resolve outside src/, so the layer rules (whose `to` is `^src/`) never
 * flag them. Type-only imports count (tsPreCompilationDeps): a type is a dependency all the same.
 */

/** The layer rule for the modules under `from`: any import into src/ outside `allowed` is an error. */
function layer(name, from, allowed, comment) {
  return {
    name,
    comment,
    severity: 'error',
    from: { path: from },
    to: { path: '^src/', pathNot: allowed },
  };
}

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment:
        'An import cycle ties its modules into one unit: none can be loaded, tested or understood ' +
        'alone, and ESM evaluation order inside the cycle decides which sees the others half-initialised.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment:
        'An import that does not resolve to a file (or an installed package) is a typo or a leftover of ' +
        'a move; dependency-cruiser cannot see where it points, so it would hide a dependency from the ' +
        'other rules.',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
    {
      name: 'src-not-to-test-or-bench',
      comment:
        'src/ is what ships; test/ and bench/ are built on top of it and are not installed with it, ' +
        'so src/ must never import from them.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    layer(
      'layer-util',
      '^src/util/',
      '^src/util/',
      'src/util is the bottom layer (errors, random numbers): it must stay importable from everywhere, ' +
        'so it imports nothing else in src.',
    ),
    layer(
      'layer-engine',
      '^src/engine/',
      '^src/(engine|util)/',
      'src/engine is what makes tfjs compute (backends, kernels, gradients); it knows nothing of the ' +
        'model, the data or the processes that use it, and may import only src/util.',
    ),
    layer(
      'layer-data',
      '^src/data/',
      '^src/(data|util)/',
      'src/data (datasets, download, augmentation) is independent of the model and of tfjs compute; ' +
        'it may import only src/util.',
    ),
    layer(
      'layer-model',
      '^src/model/',
      '^src/(model|engine|data|util)/',
      'src/model builds and trains the network on top of src/engine and src/data; it must not know ' +
        'about the protocol, the processes or the CLI above it.',
    ),
    layer(
      'layer-protocol',
      '^src/protocol/',
      '^src/(protocol|model|engine|util)/',
      'src/protocol is the coordinator <-> worker wire format; both sides import it, so it may import ' +
        'only src/model, src/engine and src/util, never either side.',
    ),
    layer(
      'layer-config',
      '^src/config/',
      '^src/(config|data|engine|model|util)/',
      'src/config describes a run in terms of data, ' +
        'engine and model settings; the layers that consume it (coordinator, cli) sit above it.',
    ),
    layer(
      'layer-worker',
      '^src/worker/',
      '^src/(worker|protocol|model|engine|data|util)/',
      'src/worker is the child process: it speaks src/protocol and runs src/model; it must never reach ' +
        'into the coordinator (the other process), the CLI or the public API.',
    ),
    layer(
      'layer-coordinator',
      '^src/coordinator/',
      '^src/(coordinator|config|protocol|model|engine|data|util)/',
      'src/coordinator is the main process; it drives workers through src/protocol only, so it must ' +
        'never import src/worker (the child process), src/cli or src/index.ts.',
    ),
    {
      name: 'layer-cli',
      comment:
        'src/cli may use anything in src except src/index.ts: the public library API is built from the ' +
        'same modules, and the CLI importing it would tie the library and the CLI into one.',
      severity: 'error',
      from: { path: '^src/cli/' },
      to: { path: '^src/index[.]ts$' },
    },
    // src/index.ts (the public library API) may import anything: no rule.
  ],
  options: {
    // Packages are leaves: the rules are about src/ only.
    doNotFollow: { path: 'node_modules' },
    // Count `import type` too: with verbatimModuleSyntax they vanish from the emitted JS, but the
    // compile-time dependency (and the layering it implies) is real.
    tsPreCompilationDeps: true,
    // The imports use `.js` specifiers for `.ts` files (NodeNext); dependency-cruiser maps them to
    // the .ts file. The tsconfig is read so that any `paths` added later resolve as tsc resolves them.
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      // Resolve packages through their `exports` the way Node's ESM loader does.
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
  },
};

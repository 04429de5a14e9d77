/**
 * Piscina's entry for the augmentation threads; it re-exports augment-task.ts's handler.
 *
 * A worker thread is plain Node and may not load .ts: under vitest (which transforms TypeScript only in
 * its own module runner), and on Node 20 even under `node --import tsx` and `tsx`, whose loader does
 * not reach worker threads although they inherit the execArgv (seen on Node 20.20: the plain import
 * below fails with ERR_UNKNOWN_FILE_EXTENSION in all three). So: try the plain import, which works
 * wherever a loader does reach the thread, and otherwise load the task through tsx's namespaced API,
 * which hooks only this import graph, so tsx is never registered twice in one thread.
 */
let task;
try {
  task = await import('./augment-task.ts');
} catch (error) {
  // Node 20 without a loader: ERR_UNKNOWN_FILE_EXTENSION. Node's own type stripping (22.6+) loads the
  // file but cannot map the `.js` specifiers of our imports to `.ts`: ERR_MODULE_NOT_FOUND.
  const code = error && typeof error === 'object' ? error.code : undefined;
  if (code !== 'ERR_UNKNOWN_FILE_EXTENSION' && code !== 'ERR_MODULE_NOT_FOUND') throw error;
  const { register } = await import('tsx/esm/api');
  const api = register({ namespace: 'trainpool-augment-task' });
  task = await api.import('./augment-task.ts', import.meta.url);
}

export default task.default;

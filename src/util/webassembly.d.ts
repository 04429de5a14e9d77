// The parts of the WebAssembly JavaScript API that optim/kernels.ts uses. TypeScript declares them in its
// DOM library only, which this Node project leaves out (tsconfig lib); Node 20 has them all.
declare global {
  namespace WebAssembly {
    class Memory {
      constructor(descriptor: { initial: number; maximum?: number; shared?: boolean });
      /** A SharedArrayBuffer for a shared memory (the exchange arena's). */
      readonly buffer: ArrayBuffer | SharedArrayBuffer;
    }
    class Module {
      constructor(bytes: Uint8Array);
    }
    class Instance {
      constructor(module: Module, imports?: Record<string, Record<string, unknown>>);
      readonly exports: Record<string, unknown>;
    }
  }
}
export {};

/**
 * Errors a user can act on. `code` is stable (tests and callers switch on it); the message is one line
 * that names the thing, the rule and what was received, in the manner of Keras' argument errors.
 */
export type ErrorCode =
  | 'USAGE' // a command-line option broke a rule (exit 2)
  | 'LAUNCH' // the launcher's environment (torchrun, Kubernetes, Slurm) is inconsistent or not supported (exit 2)
  | 'DATA_MISSING' // a data set file or folder is absent
  | 'DATA_INVALID' // a data set file is truncated, has a wrong header, size or record count
  | 'DOWNLOAD_FAILED' // the network, the server or the checksum let a download down
  | 'BACKEND_UNAVAILABLE' // a compute backend cannot be loaded or has no device
  | 'GPU_SELECTION' // a worker cannot be given its own GPU alone (engine/gpu-selection.ts)
  | 'WORKER_FAILED' // a worker process kept failing
  | 'PROTOCOL' // the two sides of the coordinator/worker pipe disagree
  | 'CHECKPOINT' // no usable checkpoint, or one that does not match the run
  | 'OUTPUT_IN_USE' // another run holds the output, or it holds another run's files (exit 2: nothing started)
  | 'OUTPUT' // a file the run writes (outputs, checkpoints, logs, regions) could not be written
  | 'NON_FINITE_LOSS'; // training diverged (Keras' TerminateOnNaN)

export class TrainpoolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'TrainpoolError';
  }
}

export function isTrainpoolError(e: unknown, code?: ErrorCode): e is TrainpoolError {
  return e instanceof TrainpoolError && (code === undefined || e.code === code);
}

/**
 * The architectures by name, apart from minigooglenet.ts: the command line checks a name without loading
 * tfjs-layers (a mistyped option is answered in a fraction of a second).
 */
export type ModelName = 'minigooglenet' | 'small' | 'tiny';
export const MODEL_NAMES: readonly ModelName[] = ['minigooglenet', 'small', 'tiny'];

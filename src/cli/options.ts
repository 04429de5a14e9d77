/**
 * The command line: commander parses argv, and src/config.ts (the one declaration of every option)
 * validates every rule and fills every default. What leaves here is a ResolvedConfig the rest of the code
 * trusts without re-checking. Everything checkable before training starts is checked there or in
 * preflight.ts, never at the end.
 */
import { Command, CommanderError, Option } from 'commander';
import { flagOf, OPTIONS, rangeOf, UsageError, type Gpu, type OptionKey, type ResolvedConfig } from '../config/config.js';
import { resolveConfig, type RawOptions } from '../config/resolve.js';

export function buildCommand(): Command {
  const command = new Command('train').description('Train an image classifier with data parallelism: one worker process per GPU.');
  for (const [key, spec] of Object.entries(OPTIONS)) {
    const option = new Option(spec.flag, spec.help);
    if (option.attributeName() !== key) throw new Error(`option ${spec.flag} must be declared as ${option.attributeName()}. Received: ${key}: this is a bug`);
    // Shown by --help only: resolveConfig fills defaults, so that it sees what was given.
    if ('default' in spec) option.default(String(spec.default));
    // The range beside the meaning: what resolve.ts checks is what --help promises.
    const range = rangeOf(spec.rule);
    if (range) option.description = `${spec.help} (${range})`;
    command.addOption(option);
  }
  return (
    command
      .helpOption('-h, --help', 'show this help')
      .allowExcessArguments(false)
      .exitOverride()
      // main() prints help and errors itself, once and in its own format.
      .configureOutput({ writeOut: () => {}, writeErr: () => {} })
  );
}

/** Parses argv (without node and script) into a ResolvedConfig, or throws UsageError. */
export function parseArgs(argv: string[], gpusFound: Gpu[]): ResolvedConfig | 'help' {
  const command = buildCommand();
  try {
    command.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed') return 'help';
      throw new UsageError(e.message.replace(/^error: /, ''));
    }
    throw e;
  }
  const values = command.opts();
  const raw: RawOptions = {};
  for (const key of Object.keys(OPTIONS) as OptionKey[]) {
    if (command.getOptionValueSource(key) === 'cli') raw[key] = values[key];
  }
  return resolveConfig({ raw, label: flagOf, gpusFound });
}

export function helpText(): string {
  return buildCommand().helpInformation();
}

/**
 * The options given more than once, with the value that counts (commander keeps the last): a warning
 * each, since `--epochs 70 … --epochs 5` is more often a slip than meant.
 */
export function repeatedOptions(argv: readonly string[]): string[] {
  const flags = new Map(Object.values(OPTIONS).map((spec) => [spec.flag.split(' ')[0], spec.flag.includes('<')]));
  const seen = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    if (!flags.has(flag)) continue;
    const value = inline ?? (flags.get(flag) ? argv[++i] : 'on');
    seen.set(flag, [...(seen.get(flag) ?? []), value ?? '']);
  }
  return [...seen].filter(([, values]) => values.length > 1).map(([flag, values]) => `${flag} was given ${values.length} times (${values.join(', ')}); the last, ${values.at(-1)}, is used`);
}

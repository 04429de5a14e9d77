/**
 * A line after vitest's summary when WebGPU test files were skipped for want of an adapter (helpers/webgpu.ts
 * logs one warning per such file): how many, why, and the command that runs them. Without it a plain
 * `npm test` on a machine without the software GPU passes with the WebGPU half of the suite unrun, and
 * says so only among the logs.
 */
import type { UserConsoleLog } from 'vitest';
import type { Reporter, TestModule } from 'vitest/node';

const SKIPPED = / skipped: (no WebGPU adapter found .*?); run /;

export default class WebgpuSkipReporter implements Reporter {
  private readonly files = new Set<string>();
  private reason = '';

  onUserConsoleLog(log: UserConsoleLog): void {
    const m = SKIPPED.exec(log.content);
    if (!m) return;
    this.files.add(log.content.slice(0, log.content.indexOf(' skipped: ')));
    this.reason = m[1];
  }

  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    if (this.files.size === 0) return;
    let tests = 0;
    for (const m of modules) {
      if (![...this.files].some((f) => m.moduleId.endsWith(`/${f}`))) continue;
      for (const t of m.children.allTests()) if (t.result().state === 'skipped') tests++;
    }
    process.stdout.write(
      `\n  WebGPU: ${tests} tests in ${this.files.size} ${this.files.size === 1 ? 'file' : 'files'} skipped, ${this.reason}.\n` +
        `  Run them on the software GPU: eval "$(bash tools/soft-gpu.sh)" && npm test   (CI does, with TRAINPOOL_REQUIRE_WEBGPU=1)\n\n`,
    );
  }
}

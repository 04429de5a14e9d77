#!/usr/bin/env bash
# The GPU engine's whole check in one device call (give it timeout_s 600; the script keeps to
# GPU_CHECK_SECONDS, 560 by default, cutting the last steps short if earlier ones were slow):
#   1. the webgpu correctness tests (project kernels vs the cpu backend, a whole step's gradients),
#   2. bench:engine on webgpu at batch 64 and 256 with the project's kernels,
#   3. the PyTorch reference (bench/pytorch_minigooglenet.py) on the same card,
#   4. bench:engine again with the project's opt-in forward convolution (project-forward: whether it beats
#      tfjs' own decides the default) and with tfjs' stock kernels,
# then one table with img/s and the ratio to PyTorch. Before them, 0.: the GPU selection check
# (bench/gpu-selection-check.ts: Mesa's device-select layer lists the GPU at its PCI address, a worker
# tagged for it sees it alone and trains, a wrong tag is refused). On the GPU machine, from the project root:
#   bash ../shared/device/pack.sh && bash tools/pack-device-select.sh   # here, once, after npm ci
#   bash .device-bundle/run.sh bash bench/gpu-check.sh                  # there (carry .device-bundle)
# Results go to $OUT (the device call's folder) when set, else bench/results/gpu-check/, one JSON line per
# run in engine.jsonl, plus the test log. A step that fails or times out is reported and the rest still run.
# A smoke run of the script itself on the software GPU (lavapipe), PyTorch then failing without CUDA:
#   eval "$(bash tools/soft-gpu.sh)"; GPU_CHECK_MODEL=tiny GPU_CHECK_BATCHES=8 GPU_CHECK_IMAGES=24 bash bench/gpu-check.sh
# The budget itself: the same with GPU_CHECK_SECONDS=90, where the later steps are cut short.
set -uo pipefail
cd "$(dirname "$0")/.."
model=${GPU_CHECK_MODEL:-minigooglenet}
batches=${GPU_CHECK_BATCHES:-64 256}
images=${GPU_CHECK_IMAGES:-1920} # timed images per project-kernel run; a third of that with the stock kernels
out=${OUT:-bench/results/gpu-check}
mkdir -p "$out"
: > "$out/engine.jsonl"
status=0
# One device call may run 600 s: every step gets at most its own limit and what is left of the budget,
# less 20 s for the table, so a slow step costs the ones after it rather than the whole call. The order
# puts first what answers the most: the tests, the project's kernels, then PyTorch for the ratio.
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-560}))
limit() { local left=$((deadline - SECONDS - 20)); [ "$left" -lt "$1" ] && echo $((left > 1 ? left : 1)) || echo "$1"; }

echo "== 0. GPU selection by PCI address (bench/gpu-selection-check.ts)"
if ! OUT="$out" timeout "$(limit 90)" node --import tsx bench/gpu-selection-check.ts >"$out/selection.log" 2>&1; then
  status=1
  echo "FAILED (or timed out):"
fi
grep -E '^\|' "$out/selection.log" || tail -5 "$out/selection.log"

echo "== 1. webgpu correctness (vitest, TRAINPOOL_REQUIRE_WEBGPU=1)"
if ! NO_COLOR=1 TRAINPOOL_REQUIRE_WEBGPU=1 timeout "$(limit 200)" node_modules/.bin/vitest run test/webgpu-kernels.test.ts test/webgpu.test.ts >"$out/tests.log" 2>&1; then
  status=1
  echo "FAILED (tail of $out/tests.log):"
fi
grep -E "Test Files|Tests|FAIL|✓ test|× " "$out/tests.log" | tail -20

# Steps per run: enough for a stable mean at the expected speeds (30 and 7 steps), few enough for the stock
# kernels (10 and 2 steps; about 0.5 s/step at batch 64 and 1.6 s/step at 256 on an H200). Each run also
# spends a warm-up, a counted and a profiled step.
engine() {
  local kernels=$1 batch=$2 steps
  steps=$([ "$kernels" = stock ] && echo $((images / 3 / batch)) || echo $((images / batch)))
  [ "$steps" -ge 1 ] || steps=1
  if ! timeout "$(limit 150)" node --import tsx bench/engine.ts --backend webgpu --model "$model" --kernels "$kernels" --batch "$batch" --steps "$steps" --json \
    >>"$out/engine.jsonl" 2>"$out/engine-$kernels-$batch.err"; then
    status=1
    echo "bench:engine --kernels $kernels --batch $batch failed or timed out: $(tail -3 "$out/engine-$kernels-$batch.err")"
  fi
}

echo "== 2. bench:engine on webgpu, the project's kernels"
for batch in $batches; do engine project "$batch"; done

echo "== 3. PyTorch reference"
if ! timeout "$(limit 150)" python3 bench/pytorch_minigooglenet.py $(for b in $batches; do echo --batch $b; done) --json >>"$out/engine.jsonl" 2>"$out/pytorch.err"; then
  status=1
  echo "pytorch_minigooglenet.py failed or timed out: $(tail -3 "$out/pytorch.err")"
fi

echo "== 4. bench:engine on webgpu, with the project's forward convolution, then tfjs' stock kernels"
for kernels in project-forward stock; do
  for batch in $batches; do engine "$kernels" "$batch"; done
done

echo "== results"
python3 - "$out/engine.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
torch = {(r["batch"], r["mode"]): r for r in rows if r["backend"] == "pytorch"}
print(f"{'run':34s} {'batch':>5s} {'ms/step':>9s} {'host ms':>8s} {'img/s':>9s} {'dispatches':>10s} {'upload B':>10s} {'vs PyTorch train':>16s} {'vs worker':>9s}")
for r in rows:
    name = f"{r['backend']} {r['kernels'] if r['backend'] != 'pytorch' else r['mode']}"
    ref = torch.get((r["batch"], "train"))
    ref_worker = torch.get((r["batch"], "worker"))
    ratio = f"{r['imgPerSec'] / ref['imgPerSec']:.3f}" if ref else "-"
    ratio_worker = f"{r['imgPerSec'] / ref_worker['imgPerSec']:.3f}" if ref_worker else "-"
    fmt = lambda v: "-" if v is None else str(v)
    host = r.get('hostMsPerStep')
    print(f"{name[:34]:34s} {r['batch']:5d} {r['msPerStep']:9.2f} {'-' if host is None else f'{host:.2f}':>8s} {r['imgPerSec']:9.1f} {fmt(r.get('dispatchesPerStep')):>10s} {fmt(r.get('uploadBytesPerStep')):>10s} {ratio:>16s} {ratio_worker:>9s}")
for r in rows:
    if r["backend"] == "pytorch" or not r.get("topKernels"):
        continue
    top = ", ".join(f"{k['name']} {k['ms']:.1f}" for k in r["topKernels"][:6])
    print(f"{r['backend']} {r['kernels']} batch {r['batch']}: profiled step {r['profiledKernelMs']:.1f} ms of {r['profiledKernelClock']} time "
          f"in kernels (timed steps {r['msPerStep']:.1f} ms, host {r.get('hostMsPerStep') or 0:.1f} ms); most: {top}")
devices = sorted({r["device"] for r in rows})
print("devices:", "; ".join(devices))
EOF
exit $status

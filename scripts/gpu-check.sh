#!/usr/bin/env bash
# For a session on a machine with a real GPU: runs the WebGPU suite on the machine's own adapter
# (LLMOPT_TEST_WEBGPU=system) and the benchmark, and prints the figures the README's GPU section needs:
# decode tokens/s at batch 1 and 32, WebGPU against the CPU, fused against standard attention.
# Usage: scripts/gpu-check.sh [out-folder]   (default /tmp/llmopt-gpu-check; about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/llmopt-gpu-check}
mkdir -p "$out"
llmopt() { node bin/llmopt.js "$@"; }

npm run build >/dev/null
echo "== devices"
llmopt devices
llmopt devices --json --refresh >"$out/devices.json"

echo "== WebGPU suite on the system adapter"
export LLMOPT_TEST_WEBGPU=system
node --import tsx --test test/webgpu/*.test.ts test/webgpu/matrix.suite.ts 2>&1 | tee "$out/suite.log" | grep -E '^(not )?ok|^# (pass|fail|skip)'

echo "== benchmark: a 12-layer, hidden-768 synthetic Llama (GPT-2-small sized), fused and standard"
m="$out/synth"
[ -d "$m" ] || llmopt synth -o "$m" --hidden 768 --layers 12 --heads 12 --kv-heads 4 --vocab 32000 --context 2048 >/dev/null
for form in fused standard; do
  [ -d "$out/$form" ] || llmopt export "$m" -o "$out/$form" --attention "$form" -q >/dev/null
done
for device in cpu webgpu; do
  flock /tmp/llmopt-bench.lock node bin/llmopt.js bench "$out/fused" "$out/standard" --device "$device" \
    --batch 1,32 --prompt-len 128 --gen-len 64 --reps 3 --json "$out/bench-$device.json" -q >/dev/null
done

echo "== decode tokens/s (median of 3; the artifacts alternate within each run)"
node -e '
const fs = require("fs");
const out = process.argv[1];
for (const device of ["cpu", "webgpu"]) {
  const r = JSON.parse(fs.readFileSync(`${out}/bench-${device}.json`, "utf8"));
  console.log(`${device}: ${r.artifacts.map((a) => a.description).join(" | ")}`);
  for (const b of r.batching) {
    const form = b.artifact.split("/").pop();
    console.log(`  ${form.padEnd(9)} batch ${String(b.batch).padStart(2)}: ${b.decodeTokensPerSecond.median.toFixed(1)} tokens/s`);
  }
}
' "$out"

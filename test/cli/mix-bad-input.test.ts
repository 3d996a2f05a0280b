// quantize --mix and --target-bits refused where they cannot be met: one line naming the option, exit code 2,
// nothing written (neither the output nor a temporary beside it). The CLI runs once per kind of refusal; the
// option checks' other cases run in-process (validateMixOptions, the same function the CLI calls).
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { InputError } from '../../src/core/errors.js';
import { validateMixOptions, type MixOptionValues } from '../../src/passes/quantize/mix-policy.js';
import { MHA, SAMPLE_TEXT, runCli, tempDir } from '../support.js';

function refused(args: string[], message: RegExp, output = 'q'): void {
  const parent = tempDir();
  const r = runCli(['quantize', MHA, ...args, '-o', join(parent, output)]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.deepEqual(readdirSync(parent), [], 'nothing written');
}

const AUTO = ['--to', 'int4', '--mix', 'auto', '--calib', SAMPLE_TEXT];

test('a mix that names no tensor: every tensor it would raise is excluded (ONNX and GGUF)', () => {
  // 2 layers: k-quant-m raises layer 1's v_proj and down_proj only.
  const exclude = ['--exclude', 'model.layers.1.self_attn.v_proj', '--exclude', 'model.layers.1.mlp.down_proj'];
  refused(['--to', 'int4', '--mix', 'k-quant-m', ...exclude], /--mix k-quant-m: names no tensor that is quantized here/);
  // GGUF q4_0: the same two; ffn_down (rows of 80) has fallen back to F16, which a mix never lowers.
  refused(
    ['--format', 'gguf', '--to', 'q4_0', '--mix', 'k-quant-m', '--exclude', 'model.layers.1.self_attn.v_proj'],
    /--mix k-quant-m: names no tensor that --to q4_0 quantizes below its type here/,
    'm.gguf',
  );
});

test('a mix that exceeds the format: no type above --to, or a format of one scheme (AWQ)', () => {
  refused(['--to', 'int8', '--mix', 'edges8'], /--mix edges8 with --to int8: int8 is the widest MatMulNBits type/);
  refused(
    ['--format', 'gguf', '--to', 'q8_0', '--mix', 'edges8'],
    /--mix edges8 raises tensors to Q8_0; --to q8_0 has no lower type/,
    'm.gguf',
  );
  refused(
    ['--to', 'int4', '--format', 'awq', '--mix', 'edges8'],
    /--mix edges8: --format awq cannot mix widths: AutoAWQ's quantization_config has one bits and group_size for every layer/,
  );
  refused(
    ['--to', 'int8', '--format', 'compressed-tensors', '--mix', 'k-quant-m'],
    /--mix k-quant-m with --to int8: int8 is the widest type vLLM serves compressed-tensors at/,
  );
  // With a mix the kernels are checked once each module has its width; --strict still refuses before writing.
  refused(
    ['--to', 'int4', '--format', 'compressed-tensors', '--mix', 'k-quant-m', '--exclude', '*down_proj', '--strict'],
    /--strict: no vLLM kernel serves 4-bit symmetric model\.layers\.0\.self_attn\.qkv_proj at bfloat16/,
  );
});

test('--target-bits outside the types, or this model; without --mix auto; --mix auto without --calib', () => {
  // Block 32, symmetric: int4 stores 5 bits per weight with its float32 scales, int8 9.
  refused(
    [...AUTO, '--target-bits', '4.5'],
    /--target-bits 4\.5: --to int4 stores 5 bits per weight and the raised type 9; choose between/,
  );
  // tiny-llama's down_proj has rows of 80: at block 32 each pads to 96, so 5 bits per weight is below its smallest.
  refused([...AUTO, '--target-bits', '5'], /--target-bits 5: below this model's int4 size \(5\.16\d+ bits per weight/);
  refused(['--to', 'int4', '--mix', 'edges8', '--target-bits', '5.5'], /--target-bits: sets the budget of --mix auto \(add --mix auto\)/);
  refused(
    ['--to', 'int4', '--mix', 'auto', '--target-bits', '5.5'],
    /--mix auto measures each tensor on calibration text: give --calib <file>/,
  );
});

test('the option checks behind those refusals, case by case', () => {
  const base: MixOptionValues = {
    mix: 'auto',
    targetBits: 6,
    calib: SAMPLE_TEXT,
    format: 'onnx',
    to: 'int4',
    blockSize: 32,
    asymmetric: false,
  };
  const cases: Array<[Partial<MixOptionValues>, RegExp, string[]?]> = [
    [{ to: 'fp16', mix: 'k-quant-m', targetBits: undefined }, /--mix k-quant-m with --to fp16: mixes raise int4 weights to int8/],
    [{ format: 'gguf', to: 'q6_k', mix: 'k-quant-m', targetBits: undefined }, /raises tensors to Q6_K; --to q6_k has no lower type/],
    [{ format: 'gguf', to: 'f16', mix: 'edges8', targetBits: undefined }, /--to f16 has no lower type/],
    [{ format: 'awq', mix: 'edges8', targetBits: undefined }, /--format awq cannot mix widths: .*modules_to_not_convert/],
    [{ format: 'gptq', to: 'int8', mix: 'edges8', targetBits: undefined }, /int8 is the widest type vLLM serves gptq at/],
    // compressed-tensors' raised int8 is symmetric (no vLLM kernel takes 8-bit zero points): 9 bits at block 32.
    [{ format: 'compressed-tensors', asymmetric: true, targetBits: 9.1 }, /stores 5\.125 bits per weight and the raised type 9;/],
    [{ format: 'gguf', to: 'q4_0', targetBits: 4 }, /--target-bits 4: --to q4_0 stores 4\.5 bits per weight and the raised type 8\.5/],
    [{ format: 'gguf', to: 'q8_0' }, /--mix auto raises tensors to Q8_0; --to q8_0 has no lower type/],
    [{ targetBits: 9.5 }, /--target-bits 9\.5: .* the raised type 9/],
    [{ blockSize: 64, asymmetric: true, targetBits: 4.5 }, /stores 4\.5625 bits per weight/],
    [{ mix: 'none' }, /--target-bits: sets the budget of --mix auto/, ['targetBits']],
    [{ targetBits: undefined }, /--mix auto needs a budget: give --target-bits <bits per weight>/],
  ];
  for (const [change, message, given] of cases) {
    const o = { ...base, ...change };
    assert.throws(
      () => validateMixOptions(o, new Set(given ?? (o.targetBits === undefined ? [] : ['targetBits']))),
      (e: unknown) => {
        assert.ok(e instanceof InputError);
        assert.match(e.message, message);
        return true;
      },
    );
  }
  // Within range, and GGUF targets a mix can raise: accepted.
  validateMixOptions(base, new Set(['targetBits']));
  validateMixOptions({ ...base, format: 'gguf', to: 'q4_k', mix: 'k-quant-m', targetBits: undefined }, new Set());
  validateMixOptions({ ...base, format: 'gguf', to: 'q6_k', mix: 'edges8', targetBits: undefined }, new Set());
  // compressed-tensors and GPTQ hold a mix (config groups; `dynamic` rules).
  validateMixOptions({ ...base, format: 'compressed-tensors' }, new Set(['targetBits']));
  validateMixOptions({ ...base, format: 'gptq', mix: 'k-quant-m', targetBits: undefined }, new Set());
});

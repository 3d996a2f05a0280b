// quantize's declaration: fp16 / int8 / int4 (RTN or GPTQ) / w8a8 weights of a float Hugging Face folder,
// as an ONNX artifact or a checkpoint for the engines (compressed-tensors, GPTQ, AWQ); with eval, the quality cost.
import { ATTENTION_FORMS } from '../../core/io.js';
import { SERVE_DTYPES } from '../../formats/vllm-rules.js';
import { DEVICES } from '../../runtime/device.js';
import { defaultAttention } from '../export.js';
import { boolean, choice, int, negatable, number, OptionError, outputFolder, printOptions, repeatable, textFile } from '../options.js';
import { definePass, evalAfter, QUALITY_GATES, quality } from '../pass.js';
import { ONNXRUNTIME_DEFAULTS, matMulNBitsDefaults, type AccuracyLevel } from './matmul-nbits.js';
import { GGUF_TARGETS, quantizeGguf, validateGgufQuantizeOptions } from './gguf.js';
import { MIX_POLICIES, validateMixOptions } from './mix-policy.js';
import { CLIP_MODES } from './clip.js';
import {
  CALIBRATED_METHODS,
  quantize,
  QUANT_FORMATS,
  QUANT_METHODS,
  QUANT_TARGETS,
  validateQuantizeOptions,
  type QuantTarget,
} from './quantize.js';

export const QUANTIZE_OPTIONS = {
  ...outputFolder('output folder'),
  to: choice([...QUANT_TARGETS, ...GGUF_TARGETS], {
    arg: '<precision>',
    required: true,
    help: `${QUANT_TARGETS.join(' | ')}; with --format gguf: ${GGUF_TARGETS.join(' | ')}`,
  }),
  method: choice(QUANT_METHODS, {
    arg: '<method>',
    default: 'rtn',
    help:
      'rtn (round-to-nearest) | gptq (error-compensated) | awq (activation-aware scales folded into the norms, then rtn) | ' +
      'awq+gptq (the scales, then gptq); all but rtn need --calib',
  }),
  clip: choice(CLIP_MODES, {
    arg: '<mode>',
    default: 'minmax',
    help:
      "block scales: minmax | search (int4/int8: ranges shrunk for the least error; gguf: llama.cpp's searches; " +
      "weighted by the inputs' energy with --calib)",
  }),
  blockSize: int({ min: 1, default: 32, help: 'int4/int8: weights per block along the input dimension (16, 32, 64, 128)' }),
  asymmetric: boolean({ help: 'int4/int8: a zero point per block (default: symmetric, except int8 on --device cpu)' }),
  // int8's CPU default takes zero points; this is the way back (a flag, as --float-embeddings is for the embeddings).
  symmetric: boolean({ help: 'int4/int8: no zero points (the default but for int8 on --device cpu, which is asymmetric)' }),
  accuracyLevel: int({
    min: 0,
    max: 4,
    help: 'MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute (default: 4 on --device cpu, else 0)',
  }),
  activationResidual: choice(['on', 'off'], {
    arg: '<on|off>',
    help:
      "accuracy level 4: every product also multiplies its int8 activations' rounding residual (float accuracy for " +
      'a second row; default: on for int8 on --device cpu, off for int4)',
  }),
  mix: choice(MIX_POLICIES, {
    arg: '<policy>',
    default: 'none',
    help:
      'int4 / GGUF: tensors at a higher type — k-quant-m (those llama.cpp Q4_K_M raises), edges8 (first and last layers, ' +
      'lm_head at 8 bits), auto (measured KL per byte, needs --calib and --target-bits)',
  }),
  targetBits: number({ arg: '<bits>', positive: true, help: '--mix auto: bits per quantized weight to spend, scales included' }),
  exclude: repeatable({ arg: '<glob>', help: 'keep matching modules in float, e.g. "model.layers.0.*" or "*down_proj" (repeatable)' }),
  quantizeEmbeddings: boolean({ help: 'also quantize the embedding (GatherBlockQuantized) and lm_head, at --to bits' }),
  // The int4 CPU default quantizes them at 8 bits; this is the way back to float (a flag of its own, not an optional value,
  // so that no model path is ever taken for one).
  floatEmbeddings: boolean({ help: 'keep the embedding and lm_head in float (default: int4 on --device cpu quantizes them at 8 bits)' }),
  format: choice([...QUANT_FORMATS, 'gguf'], {
    arg: '<format>',
    default: 'onnx',
    help:
      'onnx: an artifact llmopt runs; compressed-tensors (vLLM), gptq (GPTQModel/AutoGPTQ layout), ' +
      'awq (AutoAWQ GEMM layout): Hugging Face folders the serving engines load; gguf: one llama.cpp file (-o m.gguf)',
  }),
  // The engines' formats: vLLM's rules are checked before anything is written.
  serveDtype: choice(SERVE_DTYPES, {
    arg: '<dtype>',
    default: 'bfloat16',
    help: 'compressed-tensors: the dtype vLLM will serve in; its kernels (Marlin, Machete, Exllama) are checked for it',
  }),
  strict: boolean({
    help: 'compressed-tensors/gptq/awq: refuse (exit 2) where vLLM would split a fused group or has no kernel, instead of warning',
  }),
  threads: int({ min: 1, help: 'gguf: threads that encode the tensors (default: all cores)' }),
  fallback: negatable({
    help: "gguf: rows that do not fit a type's blocks take llama.cpp's fallback type, or F16 (--no-fallback: refuse)",
  }),
  attention: choice(ATTENTION_FORMS, {
    arg: '<form>',
    help: 'attention form of the ONNX artifact (default: inplace for --device cpu, fused for webgpu and cuda)',
  }),
  device: choice(DEVICES, {
    arg: '<device>',
    default: 'cpu',
    only: 'cli',
    help: `the device the artifact is for (${DEVICES.join(' | ')}): picks the attention form and MatMulNBits settings not given`,
  }),
  calib: textFile({ help: 'calibration text for GPTQ, one document per line' }),
  calibSamples: int({ min: 1, default: 128, help: 'calibration windows' }),
  calibSeqLen: int({ min: 2, help: 'tokens per calibration window (default: min(128, context))' }),
  actOrder: boolean({ help: 'GPTQ: process columns by decreasing Hessian diagonal (static groups)' }),
  dampening: number({ arg: '<f>', min: 0, default: 0.01, help: 'GPTQ Hessian dampening, a fraction of the mean diagonal' }),
  eval: textFile({ help: 'after quantizing, measure KL / top-1 / perplexity against the source on this text' }),
  ...printOptions('no progress bars'),
};

export const quantizePass = definePass({
  name: 'quantize',
  options: QUANTIZE_OPTIONS,
  reads: { input: ['hf'] },
  readHint: 'quantize reads the float checkpoint: put quantize after prune and distill, and let it write the ONNX artifact',
  writes: (o) =>
    o.format === 'gguf' ? { kind: 'gguf' } : o.format !== 'onnx' ? { kind: 'hf-quantized' } : { kind: 'artifact', precision: o.to },
  figures: (o) => (o.eval !== undefined ? QUALITY_GATES : []),
  gateHint: '; set eval: true on the stage to measure it, or gate an eval stage',
  dataDefaults: (o) => (CALIBRATED_METHODS.includes(o.method) || o.mix === 'auto' ? ['calib'] : []),
  validate: (o, given) => {
    // Round-to-nearest reads calibration text only to weigh the clip search or to measure --mix auto: a --calib it
    // would not read is refused, not silently ignored.
    if (o.calib !== undefined && o.method === 'rtn' && o.clip !== 'search' && o.mix !== 'auto')
      throw new OptionError(
        'calib',
        (n) =>
          `${n('calib')}: ${n('method')} rtn reads no calibration text (it weighs ${n('clip')} search and measures ${n('mix')} auto; ` +
          `${n('method')} gptq and awq need it)`,
      );
    if (o.format === 'gguf') {
      validateGgufQuantizeOptions(o, given);
      validateMixOptions(o, given);
      if (o.floatEmbeddings)
        throw new OptionError('floatEmbeddings', (n) => `${n('floatEmbeddings')}: an ONNX option; GGUF files follow llama.cpp's types`);
      if (o.eval !== undefined)
        throw new OptionError('eval', (n) => `${n('eval')}: measures ONNX artifacts; a GGUF is measured by llama.cpp`);
      return;
    }
    if ((GGUF_TARGETS as readonly string[]).includes(o.to))
      throw new OptionError('to', (n) => `${n('to')} ${o.to}: a GGUF type; add ${n('format')} gguf`);
    if (given.has('threads'))
      throw new OptionError('threads', (n) => `${n('threads')}: the GGUF encoder's threads (add ${n('format')} gguf)`);
    if (given.has('fallback')) {
      const flag = (n: (key: string) => string) => n('fallback').replace(/^--/, '--no-');
      throw new OptionError('fallback', (n) => `${flag(n)}: a GGUF option (add ${n('format')} gguf)`);
    }
    if (o.floatEmbeddings && o.to !== 'int4' && o.to !== 'int8')
      throw new OptionError(
        'floatEmbeddings',
        (n) => `${n('floatEmbeddings')}: only ${n('to')} int4 and int8 quantize embeddings by default`,
      );
    if (o.quantizeEmbeddings && o.floatEmbeddings)
      throw new OptionError('floatEmbeddings', (n) => `${n('floatEmbeddings')} contradicts ${n('quantizeEmbeddings')}: give one`);
    if (o.symmetric && o.asymmetric)
      throw new OptionError('symmetric', (n) => `${n('symmetric')} contradicts ${n('asymmetric')}: give one`);
    if (o.symmetric && o.to !== 'int4' && o.to !== 'int8')
      throw new OptionError('symmetric', (n) => `${n('symmetric')}: ${n('to')} ${o.to} has no blocks (int4 and int8 do)`);
    validateQuantizeOptions({
      ...o,
      // An unsaid level is the device's (run); level 4 is the one the residual needs, so only a given one is checked here.
      accuracyLevel: o.accuracyLevel ?? (o.activationResidual === 'on' ? 4 : 0),
      to: o.to as QuantTarget,
      format: o.format as (typeof QUANT_FORMATS)[number],
      symmetric: !o.asymmetric,
      activationResidual: o.activationResidual === 'on',
    });
    // Only the integer precisions are block-wise: a block size asked of any other is a mistake, not a no-op.
    if (given.has('blockSize') && o.to !== 'int4' && o.to !== 'int8') {
      throw new OptionError(
        'blockSize',
        (n) => `${n('blockSize')} ${o.blockSize}: ${n('to')} ${o.to} has no blocks (block sizes apply to int4 and int8)`,
      );
    }
    validateMixOptions(o, given);
  },
  run: async (o, ctx) => {
    if (o.format === 'gguf') {
      const report = await quantizeGguf(ctx.reads.input!, ctx.output, {
        ...o,
        to: o.to as (typeof GGUF_TARGETS)[number],
        mix: o.mix,
        onProgress: ctx.onProgress,
        onWarning: (text: string) => ctx.onLog?.(`warning: ${text}`),
      });
      return { ...report, eval: null };
    }
    // What the user left unsaid comes from the device the artifact is for (the engines' formats have no such choice).
    const bits = o.to === 'int4' ? 4 : o.to === 'int8' ? 8 : null;
    const fast = bits && o.format === 'onnx' ? matMulNBitsDefaults(ctx.device, bits) : ONNXRUNTIME_DEFAULTS;
    const accuracyLevel = (o.accuracyLevel ?? fast.accuracyLevel) as AccuracyLevel;
    const options = {
      ...o,
      to: o.to as QuantTarget,
      format: o.format as (typeof QUANT_FORMATS)[number],
      symmetric: !(o.asymmetric || (!o.symmetric && fast.asymmetric)),
      accuracyLevel,
      // On by default only where level 4 is the level (an explicit --accuracy-level 0 turns the default off too).
      activationResidual: o.activationResidual ? o.activationResidual === 'on' : fast.residual && accuracyLevel === 4,
      attention: o.attention ?? defaultAttention(ctx.device, 'llmopt'),
      quantizeEmbeddings: o.quantizeEmbeddings || (!o.floatEmbeddings && fast.embeddingBits !== null),
      ...(!o.quantizeEmbeddings && !o.floatEmbeddings && fast.embeddingBits ? { embeddingBits: fast.embeddingBits } : {}),
      onProgress: ctx.onProgress,
      onWarning: (text: string) => ctx.onLog?.(`warning: ${text}`),
    };
    const report = await quantize(ctx.reads.input!, ctx.output, options);
    return { ...report, eval: await evalAfter(o.eval, ctx) };
  },
  measured: (r) => quality(r.eval),
});

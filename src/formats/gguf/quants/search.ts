// llama.cpp's scale searches (ggml-quants.c: nearest_int, make_qx_quants, make_qkx2_quants,
// make_qkx3_quants, make_qp_quants), in float32 arithmetic: C evaluates every float expression in single
// precision on x86-64 (SSE, no FMA in ggml-base, no reassociation), so each operation here is Math.fround-ed
// in C's evaluation order, which makes the chosen scales and codes bit-identical to llama.cpp's.

const fr = Math.fround;
/** ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero. */
export const GROUP_MAX_EPS = fr(1e-15);
const F_0_1 = fr(0.1);

/** ggml's nearest_int: round half to even (adds 1.5 * 2^23 in float32), for |x| <= 2^22. */
export function nearestInt(x: number): number {
  return fr(x + 12582912) - 12582912;
}

/** A view into a float buffer: `n` values from `at`. */
export interface Span {
  x: ArrayLike<number>;
  at: number;
}

const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, v));

/**
 * make_qx_quants: a symmetric scale for codes in [-nmax, nmax - 1] (stored + nmax in L), first from the
 * value of largest magnitude, then (rmse_type 1) the weighted least-squares scale over 18 nearby trial
 * scales. Weights `qw` (or x^2 when null). Returns the scale; L[0..n) the codes.
 */
export function makeQxQuants(
  n: number,
  nmax: number,
  x: ArrayLike<number>,
  at: number,
  L: Uint8Array,
  qw: ArrayLike<number> | null,
): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[at + i]!);
    if (ax > amax) {
      amax = ax;
      max = x[at + i]!;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, 0, n);
    return 0;
  }
  let iscale = fr(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[at + i]!;
    const l = clamp(nearestInt(fr(iscale * xi)), -nmax, nmax - 1);
    L[i] = l + nmax;
    const w = qw ? qw[i]! : fr(xi * xi);
    sumlx = fr(sumlx + fr(fr(w * xi) * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  let scale = suml2 ? fr(sumlx / suml2) : 0;
  let best = fr(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(F_0_1 * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[at + i]!;
      const l = clamp(nearestInt(fr(iscale * xi)), -nmax, nmax - 1);
      const w = qw ? qw[i]! : fr(xi * xi);
      sumlx = fr(sumlx + fr(fr(w * xi) * l));
      suml2 = fr(suml2 + fr(fr(w * l) * l));
    }
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) L[i] = nmax + clamp(nearestInt(fr(iscale * x[at + i]!)), -nmax, nmax - 1);
      scale = fr(sumlx / suml2);
      best = fr(scale * sumlx);
    }
  }
  return scale;
}

/** What the asymmetric searches return: the scale and the (positive) offset subtracted, x ~ scale * L - min. */
export interface ScaleMin {
  scale: number;
  min: number;
}

/**
 * make_qkx2_quants: an asymmetric scale and min for codes [0, nmax], from the range, then `nstep + 1`
 * trial scales (rmin + rdelta * is + nmax) / (max - min), each refit by weighted least squares; the
 * lowest weighted squared error wins. Returns scale and min (L[0..n) the codes).
 */
export function makeQkx2Quants(
  n: number,
  nmax: number,
  x: ArrayLike<number>,
  at: number,
  weights: ArrayLike<number>,
  L: Uint8Array,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): ScaleMin {
  return searchScaleMin(n, nmax, x, at, weights, L, Laux, rmin, rdelta, nstep);
}

/**
 * make_qkx3_quants: the variant the importance-weighted paths use: weights x^2 when null, and trial codes
 * guarded against a min at or near the max. For finite inputs its trial codes equal make_qkx2_quants'
 * clamped ones (a non-positive value gives 0, one past nmax gives nmax), so both share one search.
 */
export function makeQkx3Quants(
  n: number,
  nmax: number,
  x: ArrayLike<number>,
  at: number,
  weights: ArrayLike<number> | null,
  L: Uint8Array,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): ScaleMin {
  if (weights === null) {
    const w = new Float32Array(n);
    for (let i = 0; i < n; i++) w[i] = fr(x[at + i]! * x[at + i]!);
    weights = w;
  }
  return searchScaleMin(n, nmax, x, at, weights, L, Laux, rmin, rdelta, nstep);
}

/** x - min of the group, in float32, for the current best min (recomputed when it changes). */
const XM = new Float32Array(256);

function searchScaleMin(
  n: number,
  nmax: number,
  x: ArrayLike<number>,
  at: number,
  weights: ArrayLike<number>,
  L: Uint8Array,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): ScaleMin {
  let min = x[at]!;
  let max = x[at]!;
  let sumW = weights[0]!;
  let sumX = fr(sumW * x[at]!);
  for (let i = 1; i < n; i++) {
    const xi = x[at + i]!;
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    const w = weights[i]!;
    sumW = fr(sumW + w);
    sumX = fr(sumX + fr(w * xi));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, 0, n);
    return { scale: 0, min: -min };
  }
  const xm = n <= XM.length ? XM : new Float32Array(n);
  for (let i = 0; i < n; i++) xm[i] = x[at + i]! - min;
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    L[i] = clamp(nearestInt(fr(iscale * xm[i]!)), 0, nmax);
    const diff = fr(fr(fr(scale * L[i]!) + min) - x[at + i]!);
    bestError = fr(bestError + fr(weights[i]! * fr(diff * diff)));
  }
  if (nstep < 1) return { scale, min: -min };
  for (let is = 0; is <= nstep; is++) {
    // (max - min) with the best min so far, as llama.cpp writes it.
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    // A trial whose codes equal the previous trial's has the same fit and error (they depend on the codes
    // alone), which did not beat the best then and cannot now: skipping it changes nothing.
    let changed = is === 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(nearestInt(fr(iscale * xm[i]!)), 0, nmax);
      if (Laux[i] !== l) {
        Laux[i] = l;
        changed = true;
      }
    }
    if (!changed) continue;
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Laux[i]!;
      const wl = fr(weights[i]! * l);
      sumL = fr(sumL + wl);
      sumL2 = fr(sumL2 + fr(wl * l));
      sumXL = fr(sumXL + fr(wl * x[at + i]!));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        const diff = fr(fr(fr(thisScale * Laux[i]!) + thisMin) - x[at + i]!);
        curError = fr(curError + fr(weights[i]! * fr(diff * diff)));
      }
      if (curError < bestError) {
        L.set(Laux.subarray(0, n));
        bestError = curError;
        scale = thisScale;
        if (thisMin !== min) {
          min = thisMin;
          for (let i = 0; i < n; i++) xm[i] = x[at + i]! - min;
        }
      }
    }
  }
  return { scale, min: -min };
}

/**
 * make_qp_quants: a scale for non-negative values (the sub-block scales and mins of a super-block) on
 * codes [0, nmax], weighted by `qw`: 8 trial scales, then up to 5 rounds of single-code changes that
 * raise the weighted fit. Returns the scale; L[0..n) the codes.
 */
export function makeQpQuants(n: number, nmax: number, x: ArrayLike<number>, L: Uint8Array, qw: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < n; i++) max = Math.max(max, x[i]!);
  if (max < GROUP_MAX_EPS) {
    L.fill(0, 0, n);
    return 0;
  }
  let iscale = fr(nmax / max);
  for (let i = 0; i < n; i++) L[i] = nearestInt(fr(iscale * x[i]!));
  const scale = fr(1 / iscale);
  let bestMse = 0;
  for (let i = 0; i < n; i++) {
    const diff = fr(x[i]! - fr(scale * L[i]!));
    bestMse = fr(bestMse + fr(fr(qw[i]! * diff) * diff));
  }
  for (let is = -4; is <= 4; is++) {
    if (is === 0) continue;
    const iscaleIs = fr(fr(fr(F_0_1 * is) + nmax) / max);
    const scaleIs = fr(1 / iscaleIs);
    let mse = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.min(nmax, nearestInt(fr(iscaleIs * x[i]!)));
      const diff = fr(x[i]! - fr(scaleIs * l));
      mse = fr(mse + fr(fr(qw[i]! * diff) * diff));
    }
    if (mse < bestMse) {
      bestMse = mse;
      iscale = iscaleIs;
    }
  }
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.min(nmax, nearestInt(fr(iscale * x[i]!)));
    L[i] = l;
    const w = qw[i]!;
    sumlx = fr(sumlx + fr(fr(w * x[i]!) * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const w = qw[i]!;
      let slx = fr(sumlx - fr(fr(w * x[i]!) * L[i]!));
      let sl2 = fr(suml2 - fr(fr(w * L[i]!) * L[i]!));
      if (slx > 0 && sl2 > 0) {
        const newL = Math.min(nmax, nearestInt(fr(fr(x[i]! * sl2) / slx)));
        if (newL !== L[i]) {
          slx = fr(slx + fr(fr(w * x[i]!) * newL));
          sl2 = fr(sl2 + fr(fr(w * newL) * newL));
          if (fr(fr(slx * slx) * suml2) > fr(fr(sumlx * sumlx) * sl2)) {
            L[i] = newL;
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (!changed) break;
  }
  return suml2 > 0 ? fr(sumlx / suml2) : 0;
}

// The directional gradient check the distill tests share: the analytic derivative along a random unit
// direction of one parameter against the central difference of the loss, the parameter restored after.

/** d loss / d w along a random unit direction v: (g . v, (loss(w + eps v) - loss(w - eps v)) / 2 eps). */
export async function directionalDerivative(
  w: Float32Array,
  g: Float32Array,
  rand: () => number,
  eps: number,
  loss: () => Promise<number>,
): Promise<{ analytic: number; numeric: number }> {
  const v = Float32Array.from(w, () => rand() - 0.5);
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  v.forEach((x, i) => (v[i] = x / norm));
  let analytic = 0;
  for (let i = 0; i < w.length; i++) analytic += g[i]! * v[i]!;
  const base = w.slice();
  const at = async (sign: number) => {
    for (let i = 0; i < w.length; i++) w[i] = base[i]! + sign * eps * v[i]!;
    return loss();
  };
  const numeric = ((await at(1)) - (await at(-1))) / (2 * eps);
  w.set(base);
  return { analytic, numeric };
}

// How the load reports write numbers: one place, so every table rounds alike.

/** `x` with `digits` decimals, or "–" when it was not measured (NaN, undefined). */
export const fixed = (x, digits) => (Number.isFinite(x) ? x.toFixed(digits) : "–");

/** Milliseconds: two decimals below 10, one above. */
export const ms = (x) => fixed(x, x < 10 ? 2 : 1);

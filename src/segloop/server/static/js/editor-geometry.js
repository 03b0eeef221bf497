// Where things are: the case's voxel indices [i, j, k] (its stored order, as the API speaks) <-> RAS mm
// (the case's affine) <-> NiiVue's fractions and canvas pixels.

/** The RAS row (0 R, 1 A, 2 S) a view looks along. */
export const VIEW_NORMAL = { sagittal: 0, coronal: 1, axial: 2 };

/** `M · [x, y, z, 1]` for a 4×4 row-major matrix (array of rows). */
export function apply(matrix, point) {
  const [x, y, z] = point;
  return [0, 1, 2].map((r) => matrix[r][0] * x + matrix[r][1] * y + matrix[r][2] * z + matrix[r][3]);
}

/** The inverse of a 4×4 affine (rows), whose last row is [0, 0, 0, 1]. */
export function invertAffine(a) {
  const [[a00, a01, a02], [a10, a11, a12], [a20, a21, a22]] = a;
  const c00 = a11 * a22 - a12 * a21;
  const c01 = a02 * a21 - a01 * a22;
  const c02 = a01 * a12 - a02 * a11;
  const c10 = a12 * a20 - a10 * a22;
  const c11 = a00 * a22 - a02 * a20;
  const c12 = a02 * a10 - a00 * a12;
  const c20 = a10 * a21 - a11 * a20;
  const c21 = a01 * a20 - a00 * a21;
  const c22 = a00 * a11 - a01 * a10;
  const det = a00 * c00 + a01 * c10 + a02 * c20;
  const r = [
    [c00 / det, c01 / det, c02 / det],
    [c10 / det, c11 / det, c12 / det],
    [c20 / det, c21 / det, c22 / det],
  ];
  const t = [a[0][3], a[1][3], a[2][3]];
  return r.map((row) => [...row, -(row[0] * t[0] + row[1] * t[1] + row[2] * t[2])]).concat([[0, 0, 0, 1]]);
}

/**
 * The voxel axis of the case that a view looks along (the one its direction cosines point most along).
 *
 * @param {number[][]} affine the case's 4×4 voxel-to-RAS affine.
 * @param {'axial'|'coronal'|'sagittal'} view
 * @returns {number} 0, 1 or 2.
 */
export function axisOfView(affine, view) {
  const row = VIEW_NORMAL[view];
  let best = 0;
  let bestCos = -1;
  for (let axis = 0; axis < 3; axis++) {
    const norm = Math.hypot(affine[0][axis], affine[1][axis], affine[2][axis]) || 1;
    const cos = Math.abs(affine[row][axis]) / norm;
    if (cos > bestCos) {
      best = axis;
      bestCos = cos;
    }
  }
  return best;
}

/** The two in-plane axes of a slice along `axis`, in increasing order (the polygon document's u, v). */
export function planeAxes(axis) {
  return [0, 1, 2].filter((a) => a !== axis);
}

/** Canvas pixels (device pixels, as NiiVue counts) of a mouse event on `canvas`. */
export function canvasPixels(canvas, clientX, clientY) {
  const rect = canvas.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  return [(clientX - rect.left) * ratio, (clientY - rect.top) * ratio];
}

/** Page coordinates (CSS pixels) of canvas pixels. */
export function pagePixels(canvas, pixels) {
  const rect = canvas.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  return [rect.left + pixels[0] / ratio + window.scrollX, rect.top + pixels[1] / ratio + window.scrollY];
}

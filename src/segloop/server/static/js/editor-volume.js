// Labels in the editor: NIfTI bytes (the case's stored voxel order) <-> NiiVue's drawing bitmap
// (NiiVue's RAS-reoriented voxel order), gzip, merges and differences.
//
// The server only ever sees NIfTI bytes on the case's grid: what `nv.saveImage({isSaveDrawing: true})`
// writes, or a tool's output. Inside the page, merges happen on bitmaps in the drawing's order, which
// NiiVue's own `img2RAS` gives for any NIfTI on the same grid — never on raw indexes of the file.

import { NVImage } from '/static/vendor/niivue.js';

/** gzip bytes with the browser's CompressionStream. */
export async function gzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * A NIfTI label (gzip or not) as a bitmap in the drawing's voxel order.
 *
 * @param {ArrayBuffer|Uint8Array} bytes NIfTI-1 bytes on the case's grid (uint8 values).
 * @returns {Promise<Uint8Array>} one value per voxel, in `nv.drawBitmap` order.
 */
export async function toDrawingOrder(bytes) {
  const buffer = bytes instanceof Uint8Array ? bytes.slice().buffer : bytes.slice(0);
  const head = new Uint8Array(buffer, 0, 2);
  const name = head[0] === 31 && head[1] === 139 ? 'label.nii.gz' : 'label.nii';
  const image = await NVImage.loadFromUrl({ url: buffer, name });
  return Uint8Array.from(image.img2RAS());
}

/**
 * Voxel values in the file's order, as a bitmap in the drawing's order.
 *
 * @param {Uint8Array} data one uint8 per voxel, I fastest (the NIfTI order of the case's array).
 * @param {Uint8Array} template uncompressed NIfTI bytes of the drawing (`saveImage`), for its header.
 * @returns {Promise<Uint8Array>}
 */
export async function fileOrderToDrawing(data, template) {
  const offset = voxOffset(template);
  const bytes = new Uint8Array(offset + data.length);
  bytes.set(template.subarray(0, offset));
  bytes.set(data, offset);
  return toDrawingOrder(bytes);
}

/** Where the voxels of uncompressed NIfTI-1 bytes start. */
export function voxOffset(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const little = view.getInt32(0, true) === 348;
  return Math.round(view.getFloat32(108, little));
}

/**
 * Write `tool` into `drawing` where it is non-zero; optionally clear `clearValue` inside `region` first.
 *
 * @param {Uint8Array} drawing the drawing bitmap (changed in place).
 * @param {Uint8Array} tool a tool's output in the same order (0 = no opinion).
 * @param {{clearValue?: number, region?: Uint8Array}} [options] replace a class inside a region
 *   (re-interpolating a class between edited slices replaces it there).
 * @returns {number} how many voxels changed.
 */
export function mergeInto(drawing, tool, { clearValue = 0, region = null } = {}) {
  let changed = 0;
  for (let i = 0; i < drawing.length; i++) {
    let value = drawing[i];
    if (region && clearValue > 0 && region[i] && value === clearValue) value = 0;
    if (tool[i] > 0) value = tool[i];
    if (value !== drawing[i]) {
      drawing[i] = value;
      changed++;
    }
  }
  return changed;
}

/**
 * My edits (where `mine` differs from `base`) on top of `theirs`: a three-way merge, mine wins on overlap.
 *
 * @returns {{merged: Uint8Array, mine: number, theirs: number, overlap: number}} the merged bitmap and
 *   how many voxels each side changed since `base` (and how many both changed).
 */
export function mergeThreeWay(base, mine, theirs) {
  const merged = Uint8Array.from(theirs);
  let mineCount = 0;
  let theirsCount = 0;
  let overlap = 0;
  for (let i = 0; i < base.length; i++) {
    const a = mine[i] !== base[i];
    const b = theirs[i] !== base[i];
    if (a) {
      merged[i] = mine[i];
      mineCount++;
    }
    if (b) theirsCount++;
    if (a && b && mine[i] !== theirs[i]) overlap++;
  }
  return { merged, mine: mineCount, theirs: theirsCount, overlap };
}

/**
 * The values involved in the changes between two bitmaps (old and new values of changed voxels).
 *
 * @returns {{count: number, values: Set<number>}}
 */
export function changedValues(before, after) {
  const values = new Set();
  let count = 0;
  for (let i = 0; i < before.length; i++) {
    if (before[i] !== after[i]) {
      count++;
      values.add(before[i]);
      values.add(after[i]);
    }
  }
  return { count, values };
}

/**
 * A bitmap in the file's order that is 1 on slices `first..last` of voxel axis `axis`.
 *
 * @param {number[]} shape `[I, J, K]` of the case.
 * @param {number} axis 0, 1 or 2.
 * @param {number} first first slice index (inclusive).
 * @param {number} last last slice index (inclusive).
 * @returns {Uint8Array} I fastest.
 */
export function slabMask(shape, axis, first, last) {
  const [ni, nj, nk] = shape;
  const mask = new Uint8Array(ni * nj * nk);
  const stride = [1, ni, ni * nj][axis]; // voxels between two neighbours along `axis`
  const size = shape[axis];
  const low = Math.max(0, first);
  const high = Math.min(size - 1, last);
  if (low > high) return mask;
  // runs of `stride` voxels share one index along `axis`; a slab is every such run within [low, high]
  for (let start = 0; start < mask.length; start += stride * size) {
    mask.fill(1, start + low * stride, start + (high + 1) * stride);
  }
  return mask;
}

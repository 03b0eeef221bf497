// Contours on slices: click polygons, show a class's contour as control points, drag / add / delete
// points, and turn them into the polygon document the Contours tool reads (voxel coordinates of the
// case's array: `{"slice": k, "points": [[u, v], ...]}` with u, v along the two other axes in order).
//
// The points live in the case's voxel space; NiiVue only says where they are on the canvas (through
// RAS mm and its fractions), so they stay right under any orientation, zoom or view change.

import { apply, axisOfView, canvasPixels, planeAxes, VIEW_NORMAL } from './editor-geometry.js';

const HANDLE_PX = 5;
const PICK_PX = 9;

export class ContourEditor {
  /**
   * @param {object} nv the Niivue instance.
   * @param {HTMLCanvasElement} overlay the canvas laid over NiiVue's, same size.
   * @param {{affine: number[][], inverse: number[][], shape: number[]}} grid the case's grid.
   * @param {() => void} onChange called after every edit (point added, moved, deleted, polygon closed).
   */
  constructor(nv, overlay, grid, onChange) {
    this.nv = nv;
    this.overlay = overlay;
    this.grid = grid;
    this.onChange = onChange;
    this.view = 'axial';
    this.axis = axisOfView(grid.affine, 'axial');
    /** slice index -> {polygons: [{points: [[u, v]...], closed}], loaded: boolean} */
    this.slices = new Map();
    this.dragging = null;
    /** Whether clicks on the overlay edit polygons (the contour tool is on). */
    this.enabled = false;
    this.color = 'rgb(255, 220, 0)';
    overlay.addEventListener('mousedown', (event) => this.#down(event));
    overlay.addEventListener('mousemove', (event) => this.#move(event));
    window.addEventListener('mouseup', () => {
      this.dragging = null;
    });
  }

  /** Follow the shown view (each view has its own slice axis; switching clears the polygons). */
  setView(view) {
    if (!(view in VIEW_NORMAL)) return;
    const axis = axisOfView(this.grid.affine, view);
    if (axis !== this.axis) this.slices.clear();
    this.view = view;
    this.axis = axis;
    this.draw();
  }

  /** The case voxel (continuous) under a canvas position, or null off the slice. */
  voxelAt(pixels) {
    const frac = this.nv.canvasPos2frac(pixels);
    if (!frac || frac[0] < 0) return null;
    const mm = this.nv.frac2mm(frac);
    return apply(this.grid.inverse, [mm[0], mm[1], mm[2]]);
  }

  /** The index of the shown slice along this editor's axis (from NiiVue's crosshair). */
  currentSlice() {
    const mm = this.nv.frac2mm(this.nv.scene.crosshairPos);
    const voxel = apply(this.grid.inverse, [mm[0], mm[1], mm[2]]);
    const count = this.grid.shape[this.axis];
    return Math.min(count - 1, Math.max(0, Math.round(voxel[this.axis])));
  }

  /** Canvas pixels of a polygon point [u, v] on slice k, or null when NiiVue does not show it. */
  pixelsOf(k, point) {
    const voxel = [0, 0, 0];
    const [a, b] = planeAxes(this.axis);
    voxel[this.axis] = k;
    voxel[a] = point[0];
    voxel[b] = point[1];
    const mm = apply(this.grid.affine, voxel);
    const frac = Array.from(this.nv.mm2frac(mm));
    const normal = VIEW_NORMAL[this.view];
    frac[normal] = this.nv.scene.crosshairPos[normal];
    const pos = this.nv.frac2canvasPos(frac);
    return pos ? [pos[0], pos[1]] : null;
  }

  /** The polygons of the shown slice (created empty). */
  #entry(k = this.currentSlice()) {
    if (!this.slices.has(k)) this.slices.set(k, { polygons: [], loaded: false });
    return this.slices.get(k);
  }

  /** Close the open polygon of the shown slice (at least 3 points); returns whether one was closed. */
  closePolygon() {
    const entry = this.slices.get(this.currentSlice());
    const open = entry?.polygons.find((p) => !p.closed);
    if (!open || open.points.length < 3) return false;
    open.closed = true;
    this.#changed();
    return true;
  }

  /** Forget the polygons of the shown slice. */
  clearSlice() {
    this.slices.delete(this.currentSlice());
    this.#changed();
  }

  /** Forget every polygon. */
  clear() {
    this.slices.clear();
    this.#changed();
  }

  /**
   * Show a polygon document's polygons on their slices as closed, editable polygons.
   *
   * @param {object} document the polygon document (voxel or mm coordinates).
   * @param {string} className the class whose polygons to take.
   * @returns {number} how many polygons were loaded.
   */
  load(document, className) {
    const polygons = (document.classes || {})[className] || [];
    const [a, b] = planeAxes(this.axis);
    let count = 0;
    const touched = new Set();
    for (const polygon of polygons) {
      let k = polygon.slice;
      let points = polygon.points;
      if (document.coordinates === 'mm') {
        const voxels = points.map((p) => apply(this.grid.inverse, p));
        k ??= Math.round(voxels.reduce((s, v) => s + v[this.axis], 0) / voxels.length);
        points = voxels.map((v) => [v[a], v[b]]);
      }
      if (!touched.has(k)) {
        this.slices.set(k, { polygons: [], loaded: true });
        touched.add(k);
      }
      this.slices.get(k).polygons.push({ points: points.map((p) => [p[0], p[1]]), closed: true });
      count++;
    }
    if (!polygons.length) this.slices.set(this.currentSlice(), { polygons: [], loaded: true });
    this.#changed();
    return count;
  }

  /** The slice indices holding at least one closed polygon, in order. */
  keySlices() {
    return [...this.slices.entries()]
      .filter(([, entry]) => entry.polygons.some((p) => p.closed) || entry.loaded)
      .map(([k]) => k)
      .sort((x, y) => x - y);
  }

  /** Whether any key slice holds a class contour shown from the label (then the class is replaced). */
  hasLoaded() {
    return [...this.slices.values()].some((entry) => entry.loaded);
  }

  /** The polygon document of the closed polygons (voxel coordinates along this editor's axis). */
  toDocument(className) {
    const polygons = [];
    for (const k of this.keySlices()) {
      for (const polygon of this.slices.get(k).polygons) {
        if (polygon.closed) polygons.push({ slice: k, points: polygon.points.map((p) => [p[0], p[1]]) });
      }
    }
    return { axis: this.axis, coordinates: 'voxel', classes: { [className]: polygons } };
  }

  /** Redraw the polygons of the shown slice on the overlay. */
  draw() {
    const canvas = this.overlay;
    const gl = this.nv.canvas;
    if (canvas.width !== gl.width || canvas.height !== gl.height) {
      canvas.width = gl.width;
      canvas.height = gl.height;
    }
    const context = canvas.getContext('2d');
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (!(this.view in VIEW_NORMAL)) return;
    const k = this.currentSlice();
    const entry = this.slices.get(k);
    if (!entry) return;
    const ratio = window.devicePixelRatio || 1;
    context.lineWidth = 2 * ratio;
    context.strokeStyle = this.color;
    context.fillStyle = this.color;
    for (const polygon of entry.polygons) {
      const pixels = polygon.points.map((p) => this.pixelsOf(k, p)).filter(Boolean);
      if (!pixels.length) continue;
      context.beginPath();
      pixels.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
      if (polygon.closed) context.closePath();
      context.stroke();
      for (const [x, y] of pixels) {
        const half = HANDLE_PX * ratio;
        context.fillRect(x - half, y - half, 2 * half, 2 * half);
      }
    }
  }

  #changed() {
    this.draw();
    this.onChange();
  }

  #down(event) {
    if (!this.enabled || event.button !== 0) return;
    event.preventDefault();
    const pixels = canvasPixels(this.overlay, event.clientX, event.clientY);
    const k = this.currentSlice();
    const entry = this.#entry(k);
    const ratio = window.devicePixelRatio || 1;
    const hit = this.#pick(k, entry, pixels, PICK_PX * ratio);
    if (hit && event.shiftKey) {
      hit.polygon.points.splice(hit.index, 1);
      if (hit.polygon.points.length < 3 && hit.polygon.closed) {
        entry.polygons.splice(entry.polygons.indexOf(hit.polygon), 1);
      }
      this.#changed();
      return;
    }
    if (hit) {
      this.dragging = hit;
      return;
    }
    const voxel = this.voxelAt(pixels);
    if (!voxel) return;
    const [a, b] = planeAxes(this.axis);
    const point = [voxel[a], voxel[b]];
    const edge = this.#pickEdge(k, entry, pixels, PICK_PX * ratio);
    if (edge) {
      edge.polygon.points.splice(edge.index + 1, 0, point);
      this.dragging = { polygon: edge.polygon, index: edge.index + 1 };
      this.#changed();
      return;
    }
    let open = entry.polygons.find((p) => !p.closed);
    if (!open) {
      open = { points: [], closed: false };
      entry.polygons.push(open);
    }
    open.points.push(point);
    this.#changed();
  }

  #move(event) {
    if (!this.dragging) return;
    const voxel = this.voxelAt(canvasPixels(this.overlay, event.clientX, event.clientY));
    if (!voxel) return;
    const [a, b] = planeAxes(this.axis);
    this.dragging.polygon.points[this.dragging.index] = [voxel[a], voxel[b]];
    this.#changed();
  }

  /** The point within `radius` canvas pixels, as {polygon, index}. */
  #pick(k, entry, pixels, radius) {
    for (const polygon of entry.polygons) {
      for (let index = 0; index < polygon.points.length; index++) {
        const at = this.pixelsOf(k, polygon.points[index]);
        if (at && Math.hypot(at[0] - pixels[0], at[1] - pixels[1]) <= radius) return { polygon, index };
      }
    }
    return null;
  }

  /** The edge of a closed polygon within `radius` canvas pixels, as {polygon, index of its first point}. */
  #pickEdge(k, entry, pixels, radius) {
    for (const polygon of entry.polygons) {
      if (!polygon.closed) continue;
      const at = polygon.points.map((p) => this.pixelsOf(k, p));
      for (let index = 0; index < at.length; index++) {
        const p = at[index];
        const q = at[(index + 1) % at.length];
        if (p && q && distanceToSegment(pixels, p, q) <= radius) return { polygon, index };
      }
    }
    return null;
  }
}

function distanceToSegment(point, a, b) {
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const length = dx * dx + dy * dy;
  const t = length ? Math.max(0, Math.min(1, ((point[0] - a[0]) * dx + (point[1] - a[1]) * dy) / length)) : 0;
  return Math.hypot(point[0] - (a[0] + t * dx), point[1] - (a[1] + t * dy));
}

// The editor of one case (/edit/<case id>): NiiVue shows the image, the label as its editable drawing and
// the uncertainty map; brush, eraser, contours, grow and threshold edit it; saves are revised versions.
//
// Labels travel only as NIfTI bytes on the case's grid (`nv.saveImage({isSaveDrawing: true})` out, tool
// outputs and stored labels in); see editor-volume.js for the merges.
//
// `window.__status` tells tests and the benchmark where the page stands:
//   {ready, firstSlice, head, etag, dirty, saving, lastSave, lastError, conflict, preview, message}
// and `window.__editor` exposes a few helpers to them (pagePoint, drawingHistogram, setTool, ...).

import { Niivue, NVImage, SLICE_TYPE } from '/static/vendor/niivue.js';
import { ApiError, api, authHeaders, cssColor, el } from '/static/js/api.js';
import { ContourEditor } from './editor-contours.js';
import { apply, axisOfView, invertAffine, pagePixels, VIEW_NORMAL } from './editor-geometry.js';
import {
  changedValues,
  fileOrderToDrawing,
  gzip,
  mergeInto,
  mergeThreeWay,
  slabMask,
  toDrawingOrder,
} from './editor-volume.js';

const status = {
  ready: false,
  firstSlice: null,
  head: null,
  etag: null,
  dirty: false,
  saving: false,
  lastSave: null,
  lastError: null,
  conflict: null,
  preview: null,
  message: '',
  timings: {}, // ms since the page started: when each part of the case was shown
};
window.__status = status;

/** Window presets [width, level] in HU (CT as in seed 000). */
const WINDOWS = [
  ['CT', 400, 20],
  ['Lung', 1500, -600],
  ['Bone', 1800, 400],
];
/** How many edits undo can take back (NiiVue keeps them RLE-compressed in a ring). */
const UNDO_STEPS = 32;
/** Largest in-plane size shown at once; larger images show a downsampled preview first. */
const PREVIEW_ABOVE = 128;
const VIEWS = {
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  multiplanar: SLICE_TYPE.MULTIPLANAR,
};

const caseId = decodeURIComponent(window.location.pathname.split('/').filter(Boolean).pop() || '');
const caseUrl = `/api/cases/${encodeURIComponent(caseId)}`;
const $ = (id) => document.getElementById(id);

const state = {
  project: null,
  info: null,
  grid: null, // {affine, inverse, shape}
  base: null, // the drawing as stored at the shown head (drawing order)
  classValue: 1,
  mode: 'add',
  tool: 'brush',
  view: 'axial',
  growBackground: false,
  growBase: null, // {bitmap}: the label while grow scribbles hide it
  growScribbles: null, // the scribbles of the shown grow preview
  preview: null, // {before: bitmap}
  redo: [],
  undoDepth: 0, // edits undo may take back (NiiVue's ring would wrap to the newest one past the first)
  restoring: false,
  entropyLoaded: false,
};

const nv = new Niivue({
  backColor: [0, 0, 0, 1],
  show3Dcrosshair: false,
  crosshairWidth: 0.25, // voxels
  maxDrawUndoBitmaps: UNDO_STEPS + 1,
  crosshairColor: [0.3, 0.8, 1, 0.6],
  dragAndDropEnabled: false,
  isColorbar: false,
  logLevel: 'error',
  loadingText: 'loading',
});
let contours = null;

function message(text, kind = 'info') {
  const node = $('message');
  node.textContent = text;
  node.className = `message ${kind}`;
  status.message = text;
}

/** Record when a part of the case was ready (performance.now(), ms since navigation). */
function mark(name) {
  status.timings[name] = Math.round(performance.now());
}

function fail(error) {
  const text =
    error instanceof ApiError ? `${error.status} ${error.detail || error.title}` : String(error?.message || error);
  status.lastError = text;
  message(text, 'error');
}

function setDirty(dirty) {
  status.dirty = dirty;
  $('dirty').classList.toggle('hidden', !dirty);
}

function etagOf(head) {
  return head === null || head === undefined ? '"none"' : `"${head}"`;
}

function setHead(head, etag = etagOf(head)) {
  status.head = head;
  status.etag = etag;
  const versions = state.info?.versions?.length ?? 0;
  $('head-info').textContent = head === null ? 'no stored label' : `version ${head} (${versions} stored)`;
}

/** The request headers of the data NiiVue fetches itself (the bearer token). */
function fetchHeaders() {
  return Object.fromEntries(authHeaders().entries());
}

/** The drawing as NIfTI bytes in the case's stored order (uncompressed). */
async function drawingBytes() {
  return new Uint8Array(await nv.saveImage({ filename: '', isSaveDrawing: true }));
}

function drawing() {
  return nv.drawBitmap;
}

/** Replace the whole drawing (same order) as one undoable step. */
function setDrawing(bitmap, { undoable = true } = {}) {
  drawing().set(bitmap);
  if (undoable) {
    nv.drawAddUndoBitmap();
    addUndoStep();
  }
  nv.refreshDrawing(true);
  nv.drawScene();
}

function addUndoStep() {
  state.undoDepth = Math.min(UNDO_STEPS, state.undoDepth + 1);
}

// ------------------------------------------------------------------------------------------------
// loading

async function load() {
  try {
    await nv.attachTo('gl');
  } catch (error) {
    fail(`this browser cannot show the editor: ${error.message} (WebGL2 is needed)`);
    return;
  }
  nv.onLocationChange = (location) => {
    $('location').textContent = location?.string || '';
    showSlice();
  };
  nv.onDrawingChanged = (action) => {
    if (action === 'load' || state.restoring) return;
    if (action !== 'undo') {
      state.redo = [];
      addUndoStep();
    }
    setDirty(true);
  };
  const [project, info] = await Promise.all([api('/api/project'), api(caseUrl)]);
  mark('case');
  state.project = project;
  state.info = info;
  state.grid = { affine: info.affine, inverse: invertAffine(info.affine), shape: info.shape };
  $('case-name').textContent = `${project.name} / ${info.id}`;
  $('author').textContent = project.author ? `as ${project.author}` : '';
  document.title = `${info.id} · segloop editor`;
  const label = fetchLabel(); // the server assembles it while the image loads
  label.catch(() => {}); // (awaited below; a failure is reported there)
  buildClasses(project);
  buildWindows(project);
  $('modes').querySelector('[data-mode=ignore]').disabled = project.ignore_value === null;
  // colours and window before any volume: each change of them re-uploads the volume (slow in software GL)
  nv.setDrawColormap(drawColormap(project));
  nv.setDrawOpacity(Number($('opacity').value));
  const window_ = defaultWindow(project);
  await showImage(info, window_);
  markWindow(window_);
  mark('image');
  await showLabel(await label);
  mark('label');
  contours = new ContourEditor(nv, $('overlay'), state.grid, () => updateContourInfo());
  centreCrosshair();
  setView('axial');
  setTool('brush');
  $('entropy').disabled = !info.prediction;
  $('jump-uncertain').disabled = !info.most_uncertain_slice;
  if (info.draft) {
    $('resume-draft').classList.remove('hidden');
    message(`you have a draft of this case from ${info.draft.updated_at}: “Resume draft” shows it`);
  }
  loadThresholdPresets();
  status.ready = true;
}

/**
 * Show the image: a downsampled preview first when it is large, then the full one.
 *
 * @param {object} info the case JSON.
 * @param {number[]|null} window_ [width, level] to show it with (null: NiiVue's automatic range).
 */
async function showImage(info, window_) {
  const url = `${caseUrl}/image.nii.gz`;
  const big = Math.max(info.shape[0], info.shape[1]) > PREVIEW_ABOVE;
  const options = { name: 'image.nii.gz', headers: fetchHeaders() };
  if (window_) Object.assign(options, { cal_min: window_[1] - window_[0] / 2, cal_max: window_[1] + window_[0] / 2 });
  await nv.loadVolumes([{ ...options, url: big ? `${url}?preview=true` : url }]);
  await new Promise((resolve) => requestAnimationFrame(resolve));
  status.firstSlice = performance.now();
  if (big) {
    message('showing a preview; loading the full image…');
    await nv.loadVolumes([{ ...options, url }]);
    message('');
  }
}

/** The effective label's bytes and ETag (null when the server has none to give). */
async function fetchLabel() {
  try {
    const response = await api(`${caseUrl}/label.nii.gz`, { as: 'response' });
    return { bytes: await response.arrayBuffer(), etag: response.headers.get('ETag') };
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

/** The version id an ETag names (`"12"` -> 12, `"none"` -> null). */
function headOf(etag) {
  const tag = String(etag).replaceAll('"', '').replace(/^W\//, '');
  return tag === 'none' || tag === '' ? null : Number(tag);
}

/** Make the label the editable drawing; `label` is what `fetchLabel` gave. */
async function showLabel(label) {
  if (label) {
    const image = await NVImage.loadFromUrl({ url: label.bytes, name: 'label.nii.gz' });
    if (!nv.loadDrawing(image)) throw new Error('the label is not on the image grid');
    const etag = label.etag || etagOf(state.info.head);
    setHead(headOf(etag), etag);
  } else {
    nv.createEmptyDrawing();
    setHead(null);
  }
  state.base = Uint8Array.from(drawing());
  state.redo = [];
  state.undoDepth = 0;
  setDirty(false);
}

/** NiiVue's drawing colormap: each class in its schema colour, the ignore value light grey. */
function drawColormap(project) {
  const R = [0];
  const G = [0];
  const B = [0];
  const A = [0];
  const I = [0];
  const labels = ['background'];
  for (const item of project.classes) {
    const [r, g, b] = item.color || [255, 0, 0];
    R.push(r);
    G.push(g);
    B.push(b);
    A.push(255);
    I.push(item.value);
    labels.push(item.name);
  }
  const extra = [[project.ignore_value, 'ignore', [200, 200, 200]]];
  const background = growBackgroundValue(project);
  if (background !== project.ignore_value) extra.push([background, 'grow background', [90, 90, 255]]);
  for (const [value, name, [r, g, b]] of extra) {
    if (value === null || value === undefined || I.includes(value)) continue;
    R.push(r);
    G.push(g);
    B.push(b);
    A.push(160);
    I.push(value);
    labels.push(name);
  }
  return { R, G, B, A, I, labels };
}

function growBackgroundValue(project) {
  return project.classes.length + 1;
}

// ------------------------------------------------------------------------------------------------
// view

function buildClasses(project) {
  const box = $('classes');
  box.replaceChildren();
  for (const item of project.classes) {
    const button = el('button', 'small');
    button.type = 'button';
    button.dataset.value = String(item.value);
    const swatch = el('span', 'swatch');
    swatch.style.background = cssColor(item.color);
    button.append(swatch, document.createTextNode(item.name));
    button.addEventListener('click', () => pickClass(item.value));
    box.append(button);
  }
  if (project.classes.length) pickClass(project.classes[0].value);
}

function pickClass(value) {
  state.classValue = value;
  state.growBackground = false;
  for (const button of $('classes').children) {
    button.setAttribute('aria-pressed', String(Number(button.dataset.value) === value));
  }
  $('grow-background').setAttribute('aria-pressed', 'false');
  updatePen();
  contours?.draw();
}

function className() {
  return state.project.classes.find((c) => c.value === state.classValue)?.name;
}

function buildWindows(project) {
  const box = $('windows');
  box.replaceChildren();
  const presets = [...WINDOWS];
  if (project.window) presets.push(['Project', project.window[0], project.window[1]]);
  for (const [name, width, level] of presets) {
    const button = el('button', 'small', name);
    button.type = 'button';
    button.title = `W${width} / L${level}`;
    button.dataset.window = `${width},${level}`;
    button.addEventListener('click', () => applyWindow([width, level]));
    box.append(button);
  }
}

function defaultWindow(project) {
  if (project.window) return project.window;
  return project.modality === 'CT' ? [WINDOWS[0][1], WINDOWS[0][2]] : null;
}

function applyWindow(window_) {
  const image = nv.volumes[0];
  if (!image || !window_) return;
  const [width, level] = window_;
  image.cal_min = level - width / 2;
  image.cal_max = level + width / 2;
  markWindow(window_);
  nv.updateGLVolume();
}

function markWindow(window_) {
  const key = window_ ? window_.join(',') : '';
  for (const button of $('windows').children) {
    button.setAttribute('aria-pressed', String(button.dataset.window === key));
  }
}

function setView(view) {
  state.view = view;
  nv.setSliceType(VIEWS[view]);
  for (const button of $('views').children) {
    button.setAttribute('aria-pressed', String(button.dataset.view === view));
  }
  contours?.setView(view);
  showSlice();
}

/** Put the crosshair on the centre voxel (NiiVue's default 0.5 lies between two voxels). */
function centreCrosshair() {
  moveToVoxel(state.grid.shape.map((n) => Math.floor(n / 2)));
}

/** Move the crosshair to a voxel [i, j, k] of the case. */
function moveToVoxel(voxel) {
  const mm = apply(state.grid.affine, voxel);
  const frac = nv.mm2frac(mm);
  nv.scene.crosshairPos = [frac[0], frac[1], frac[2]];
  nv.drawScene();
  nv.createOnLocationChange?.();
  showSlice();
}

function currentVoxel() {
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  return apply(state.grid.inverse, [mm[0], mm[1], mm[2]]).map((v, a) =>
    Math.min(state.grid.shape[a] - 1, Math.max(0, Math.round(v))),
  );
}

function showSlice() {
  if (!state.grid) return;
  const voxel = currentVoxel();
  const view = state.view in VIEW_NORMAL ? state.view : 'axial';
  const axis = axisOfView(state.grid.affine, view);
  const where = `slice ${voxel[axis] + 1} / ${state.grid.shape[axis]} (${view})`;
  $('slice-info').textContent = `${where} · voxel [${voxel.join(', ')}]`;
  contours?.draw();
}

/** Move `delta` slices along the shown view. */
function stepSlice(delta) {
  const view = state.view in VIEW_NORMAL ? state.view : 'axial';
  const axis = axisOfView(state.grid.affine, view);
  const voxel = currentVoxel();
  voxel[axis] = Math.min(state.grid.shape[axis] - 1, Math.max(0, voxel[axis] + delta));
  moveToVoxel(voxel);
}

function jumpToUncertain() {
  const where = state.info.most_uncertain_slice;
  if (!where) return;
  const names = Object.keys(VIEW_NORMAL);
  const axis = typeof where.axis === 'number' ? where.axis : axisOfView(state.grid.affine, where.axis);
  const view = names.find((name) => axisOfView(state.grid.affine, name) === axis) || 'axial';
  const voxel = currentVoxel();
  voxel[axis] = where.index;
  setView(view);
  moveToVoxel(voxel);
}

async function toggleEntropy(on) {
  try {
    if (on && !state.entropyLoaded) {
      await nv.addVolumeFromUrl({
        url: `${caseUrl}/entropy.nii.gz`,
        name: 'entropy.nii.gz',
        colormap: 'hot',
        opacity: 0.5,
        headers: fetchHeaders(),
      });
      state.entropyLoaded = true;
    }
    if (state.entropyLoaded) nv.setOpacity(1, on ? 0.5 : 0);
  } catch (error) {
    fail(error);
  }
}

// ------------------------------------------------------------------------------------------------
// tools

function setTool(tool) {
  if (state.preview) discardPreview();
  if (state.tool === 'grow' && tool !== 'grow' && state.growBase) {
    setDrawing(state.growBase.bitmap);
    state.growBase = null;
    state.undoDepth = 0; // the undo ring holds scribbles: never bring them back as a label
  }
  state.tool = tool;
  for (const button of $('tools').children) {
    button.setAttribute('aria-pressed', String(button.dataset.tool === tool));
  }
  $('contour-panel').classList.toggle('hidden', tool !== 'contour');
  $('grow-panel').classList.toggle('hidden', tool !== 'grow');
  $('threshold-panel').classList.toggle('hidden', tool !== 'threshold');
  const clicks = tool === 'contour' || tool === 'threshold';
  $('overlay').classList.toggle('active', clicks);
  if (contours) contours.enabled = tool === 'contour';
  if (clicks && !(state.view in VIEW_NORMAL)) setView('axial');
  if (tool === 'eraser') setMode('remove');
  if (tool === 'grow') startGrow();
  updatePen();
}

function setMode(mode) {
  state.mode = mode;
  for (const button of $('modes').children) {
    button.setAttribute('aria-pressed', String(button.dataset.mode === mode));
  }
  updatePen();
}

function penValue() {
  if (state.tool === 'grow') return state.growBackground ? growBackgroundValue(state.project) : state.classValue;
  if (state.tool === 'eraser' || state.mode === 'remove') return 0;
  if (state.mode === 'ignore') return state.project.ignore_value;
  return state.classValue;
}

function updatePen() {
  if (!state.project) return;
  const painting = ['brush', 'eraser', 'grow'].includes(state.tool);
  nv.setDrawingEnabled(painting);
  nv.setPenValue(penValue(), false);
  nv.opts.penSize = Math.max(1, Number($('pen-size').value) || 1);
}

function undo() {
  if (state.undoDepth <= 0 || state.preview) return;
  state.undoDepth--;
  state.redo.push(Uint8Array.from(drawing()));
  nv.drawUndo();
}

function redo() {
  const next = state.redo.pop();
  if (!next) return;
  state.restoring = true;
  try {
    setDrawing(next);
  } finally {
    state.restoring = false;
  }
  setDirty(true);
}

/** POST a tool's preview; the tool's output label in drawing order, and its voxel count. */
async function toolPreview(name, params, files = {}) {
  const form = new FormData();
  form.append('params', JSON.stringify(params));
  for (const [key, bytes] of Object.entries(files)) {
    form.append(key, new Blob([await gzip(bytes)], { type: 'application/gzip' }), `${key}.nii.gz`);
  }
  const response = await api(`${caseUrl}/tools/${name}/preview`, { method: 'POST', body: form, as: 'response' });
  const bitmap = await toDrawingOrder(await response.arrayBuffer());
  return { bitmap, voxels: Number(response.headers.get('X-Segloop-Voxels') ?? NaN) };
}

/** Show a tool's output merged into the drawing, with Accept / Discard. */
function showPreview(label, tool, before, options = {}) {
  state.preview = { before: Uint8Array.from(before) };
  drawing().set(before);
  const changed = mergeInto(drawing(), tool, options);
  nv.refreshDrawing(true);
  nv.drawScene();
  $('preview-text').textContent = `${label}: ${changed} voxels change`;
  $('preview-banner').classList.remove('hidden');
  status.preview = { label, changed };
}

function acceptPreview() {
  if (!state.preview) return;
  nv.drawAddUndoBitmap();
  addUndoStep();
  state.preview = null;
  status.preview = null;
  state.redo = [];
  $('preview-banner').classList.add('hidden');
  setDirty(true);
  if (state.tool === 'grow') {
    state.growBase = null; // the merged label stays; the tool ends
    state.undoDepth = 0; // the undo ring behind it holds scribbles, not labels
    setTool('brush');
  }
  if (state.tool === 'contour') contours.clear();
  message('accepted: save to store it', 'ok');
}

function discardPreview() {
  if (!state.preview) return;
  setDrawing(state.preview.before, { undoable: false });
  state.preview = null;
  status.preview = null;
  $('preview-banner').classList.add('hidden');
  if (state.tool === 'grow' && state.growScribbles) setDrawing(state.growScribbles, { undoable: false });
}

/** Grow scribbles go on an empty layer (a scribble over its own class would be no change); the label
 * comes back when the tool is left, or merged with the grown classes on Accept. */
function startGrow() {
  if (!state.growBase) state.growBase = { bitmap: Uint8Array.from(drawing()) };
  setDrawing(new Uint8Array(drawing().length));
  state.undoDepth = 0; // undo takes back scribbles only
  message('scribble inside each class and outside (Background pen), then Preview');
}

async function previewGrow() {
  if (!state.growBase) return;
  try {
    const seeds = await drawingBytes();
    state.growScribbles = Uint8Array.from(drawing());
    const result = await toolPreview('grow', {}, { seeds });
    showPreview('grow from scribbles', result.bitmap, state.growBase.bitmap);
  } catch (error) {
    fail(error);
  }
}

async function loadThresholdPresets() {
  try {
    const tools = await api('/api/tools');
    const select = $('threshold-preset');
    select.replaceChildren(el('option', '', 'range below'));
    select.firstChild.value = '';
    for (const [name, range] of Object.entries(tools.threshold_presets || {})) {
      const option = el('option', '', `${name} ${Array.isArray(range) ? range.join('..') : ''}`.trim());
      option.value = name;
      select.append(option);
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error; // no tools API: the threshold panel keeps its range
  }
}

async function previewThreshold(voxel) {
  const params = { class_name: className(), seeds: [voxel] };
  const preset = $('threshold-preset').value;
  if (preset) params.preset = preset;
  else params.value_range = [Number($('threshold-low').value), Number($('threshold-high').value)];
  try {
    const result = await toolPreview('threshold', params);
    showPreview(`threshold island of ${className()}`, result.bitmap, drawing());
  } catch (error) {
    fail(error);
  }
}

function updateContourInfo() {
  const slices = contours.keySlices();
  $('contour-slices').textContent = slices.length ? `slices ${slices.map((k) => k + 1).join(', ')}` : '';
  status.contourSlices = slices;
}

async function loadClassContour() {
  const k = contours.currentSlice();
  const query = new URLSearchParams({ class_name: className(), axis: state.view, index: String(k) });
  try {
    const document_ = await api(`${caseUrl}/contours?${query}`);
    const count = contours.load(document_, className());
    message(`${count} contour(s) of ${className()} on slice ${k + 1}: drag points, then preview`);
  } catch (error) {
    fail(error);
  }
}

async function previewContours() {
  const slices = contours.keySlices();
  if (!slices.length) {
    message('draw a closed polygon first (Enter closes it)');
    return;
  }
  const between = $('contour-between').checked && slices.length > 1;
  const params = { polygons: contours.toDocument(className()), class_name: className(), fill_between: between };
  try {
    const result = await toolPreview('contours', params);
    let options = {};
    if (contours.hasLoaded()) {
      const template = await drawingBytes();
      const slab = slabMask(state.grid.shape, contours.axis, slices[0], slices[slices.length - 1]);
      options = { clearValue: state.classValue, region: await fileOrderToDrawing(slab, template) };
    }
    showPreview(`contours of ${className()}`, result.bitmap, drawing(), options);
  } catch (error) {
    fail(error);
  }
}

function onOverlayClick(event) {
  if (state.tool !== 'threshold') return;
  const pixels = [event.offsetX * (window.devicePixelRatio || 1), event.offsetY * (window.devicePixelRatio || 1)];
  const voxel = contours.voxelAt(pixels);
  if (!voxel) return;
  previewThreshold(voxel.map((v, a) => Math.min(state.grid.shape[a] - 1, Math.max(0, Math.round(v)))));
}

// ------------------------------------------------------------------------------------------------
// saving

function classesOf(values) {
  return state.project.classes.filter((c) => values.has(c.value)).map((c) => c.name);
}

async function save() {
  if (status.saving) return;
  if (state.preview) {
    message('accept or discard the preview first');
    return;
  }
  const current = Uint8Array.from(drawing());
  const { count, values } = changedValues(state.base, current);
  if (!count) {
    message('nothing changed since the shown version (“Approve as is” vouches for it)');
    return;
  }
  status.saving = true;
  try {
    const bytes = await gzip(await drawingBytes());
    const classes = classesOf(values);
    const query = classes.length ? `?classes=${encodeURIComponent(classes.join(','))}` : '';
    const result = await api(`${caseUrl}/label${query}`, {
      method: 'PUT',
      body: bytes,
      headers: { 'If-Match': status.etag, 'Content-Type': 'application/gzip' },
    });
    saved(result, current, `saved version ${result.head} (${count} voxels changed)`);
    if (state.info.draft) await deleteDraft();
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) await resolveConflict(error.body || {}, current);
    else fail(error);
  } finally {
    status.saving = false;
  }
}

function saved(result, bitmap, text) {
  state.base = Uint8Array.from(bitmap);
  state.info.versions = [...(state.info.versions || []), result.version].filter(Boolean);
  setHead(result.head);
  setDirty(false);
  status.lastSave = result;
  status.lastError = null;
  message(text, 'ok');
}

async function fetchTheirs() {
  const label = await fetchLabel();
  return { bitmap: await toDrawingOrder(label.bytes), etag: label.etag };
}

/** A 409: show who saved what; keep mine (merged onto theirs) or reload theirs (mine kept as a draft). */
async function resolveConflict(problem, mine) {
  const theirs = await fetchTheirs();
  const merge = mergeThreeWay(state.base, mine, theirs.bitmap);
  const since = problem.versions_since || [];
  $('conflict-text').textContent =
    `Version ${problem.head ?? '?'} was stored after the version you edited (${status.head ?? 'none'}).`;
  $('conflict-versions').replaceChildren(
    ...since.map((v) => {
      const classes = (v.classes || []).join(', ');
      return el('li', '', `version ${v.id} by ${v.author} (${v.source}; ${classes}) at ${v.created_at}`);
    }),
  );
  $('conflict-diff').textContent =
    `They changed ${merge.theirs} voxels, you changed ${merge.mine}; ` +
    `${merge.overlap} voxels were changed differently by both ` +
    '(“Keep mine” keeps your values there and theirs everywhere else).';
  status.conflict = { head: problem.head, mine: merge.mine, theirs: merge.theirs, overlap: merge.overlap };
  const dialog = $('conflict');
  const choice = await new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
  status.conflict = null;
  if (choice === 'keep') {
    state.base = Uint8Array.from(theirs.bitmap);
    setHead(headOf(theirs.etag), theirs.etag);
    setDrawing(merge.merged);
    setDirty(true);
    status.saving = false;
    await save();
  } else if (choice === 'theirs') {
    await saveDraft();
    state.base = Uint8Array.from(theirs.bitmap);
    setHead(headOf(theirs.etag), theirs.etag);
    setDrawing(theirs.bitmap);
    setDirty(false);
    message('showing their version; your edits are kept as your draft (“Resume draft”)', 'info');
    $('resume-draft').classList.remove('hidden');
  } else {
    message('not saved: your edits are still here', 'info');
  }
}

async function approve() {
  if (status.dirty) {
    message('you have unsaved edits: save them, or undo them to approve the shown version');
    return;
  }
  try {
    const result = await api(`${caseUrl}/approve`, { method: 'POST', headers: { 'If-Match': status.etag } });
    saved(result, drawing(), `approved as is: version ${result.head}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      message('someone saved this case meanwhile: reload the page to see their version', 'error');
      status.lastError = error.detail;
    } else fail(error);
  }
}

async function saveDraft() {
  try {
    const bytes = await gzip(await drawingBytes());
    await api(`${caseUrl}/draft`, {
      method: 'PUT',
      body: bytes,
      headers: { 'If-Match': status.etag, 'Content-Type': 'application/gzip' },
    });
    state.info.draft = { parent: status.head };
    status.draftSaved = true;
    message('draft saved: only you see it; “Resume draft” brings it back', 'ok');
  } catch (error) {
    fail(error);
  }
}

async function resumeDraft() {
  try {
    const response = await api(`${caseUrl}/draft`, { as: 'response' });
    const parent = response.headers.get('X-Segloop-Parent');
    const bitmap = await toDrawingOrder(await response.arrayBuffer());
    setDrawing(bitmap);
    setDirty(true);
    status.draftResumed = true;
    const stale = parent && parent !== 'none' && String(parent) !== String(status.head);
    message(
      stale
        ? `draft resumed; it was made from version ${parent}, the case is now at ${status.head}: ` +
            'check before saving'
        : 'draft resumed: save to store it as a version',
      stale ? 'error' : 'ok',
    );
  } catch (error) {
    fail(error);
  }
}

async function deleteDraft() {
  try {
    await api(`${caseUrl}/draft`, { method: 'DELETE' });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
  }
  state.info.draft = null;
  $('resume-draft').classList.add('hidden');
}

// ------------------------------------------------------------------------------------------------
// wiring

/** An event handler that reports what goes wrong (a failed request, a lost connection) on the page. */
function safe(handler) {
  return (...args) => {
    try {
      const result = handler(...args); // synchronously: a key handler's preventDefault must come in time
      if (result && typeof result.catch === 'function') result.catch(fail);
    } catch (error) {
      fail(error);
    }
  };
}

function on(id, event, handler) {
  $(id).addEventListener(event, safe(handler));
}

function wire() {
  const groups = [
    ['views', 'view', setView],
    ['tools', 'tool', setTool],
    ['modes', 'mode', setMode],
  ];
  for (const [id, key, action] of groups) {
    for (const button of $(id).children) button.addEventListener('click', safe(() => action(button.dataset[key])));
  }
  on('opacity', 'input', (event) => nv.setDrawOpacity(Number(event.target.value)));
  on('pen-size', 'change', updatePen);
  on('entropy', 'change', (event) => toggleEntropy(event.target.checked));
  on('jump-uncertain', 'click', jumpToUncertain);
  on('undo', 'click', undo);
  on('redo', 'click', redo);
  on('save', 'click', save);
  on('approve', 'click', approve);
  on('save-draft', 'click', saveDraft);
  on('resume-draft', 'click', resumeDraft);
  on('preview-accept', 'click', acceptPreview);
  on('preview-discard', 'click', discardPreview);
  on('grow-background', 'click', () => {
    state.growBackground = true;
    $('grow-background').setAttribute('aria-pressed', 'true');
    updatePen();
  });
  on('grow-preview', 'click', previewGrow);
  on('contour-close', 'click', () => contours.closePolygon());
  on('contour-clear', 'click', () => contours.clearSlice());
  on('contour-load', 'click', loadClassContour);
  on('contour-preview', 'click', previewContours);
  on('overlay', 'click', onOverlayClick);
  window.addEventListener('resize', () => contours?.draw());
  window.addEventListener('beforeunload', (event) => {
    if (status.dirty) {
      event.preventDefault();
      event.returnValue = '';
    }
  });
  document.addEventListener('keydown', safe(onKey), true); // before NiiVue's own keys on its canvas
}

function onKey(event) {
  if (!status.ready || event.target.closest?.('input, select, textarea, dialog')) return;
  const ctrl = event.ctrlKey || event.metaKey;
  const keys = {
    ArrowUp: () => stepSlice(1),
    ArrowDown: () => stepSlice(-1),
    PageUp: () => stepSlice(5),
    PageDown: () => stepSlice(-5),
    Enter: () => contours?.closePolygon(),
    b: () => setTool('brush'),
    e: () => setTool('eraser'),
    c: () => setTool('contour'),
    n: () => setTool('navigate'),
  };
  let action = null;
  if (ctrl && event.key === 'z') action = event.shiftKey ? redo : undo;
  else if (ctrl && event.key === 'y') action = redo;
  else if (ctrl && event.key === 's') action = save;
  else if (!ctrl) action = keys[event.key];
  if (action) {
    event.preventDefault();
    event.stopPropagation();
    return action();
  }
  return undefined;
}

/** Helpers for tests and the benchmark (data, not pixels). */
window.__editor = {
  nv,
  /** Page coordinates of fractions (fx, fy) across the shown single-view slice. */
  pagePoint(fx, fy) {
    const normal = VIEW_NORMAL[state.view] ?? 2;
    const frac = [...nv.scene.crosshairPos];
    const [a, b] = [0, 1, 2].filter((axis) => axis !== normal);
    frac[a] = fx;
    frac[b] = fy;
    const pos = nv.frac2canvasPos(frac);
    if (!pos) throw new Error(`no canvas position for ${frac}`);
    return pagePixels(nv.canvas, pos);
  },
  /** Page coordinates of a case voxel [i, j, k] on the shown slice. */
  voxelPoint(voxel) {
    const axis = contours.axis;
    const k = voxel[axis];
    const [a, b] = [0, 1, 2].filter((x) => x !== axis);
    const pos = contours.pixelsOf(k, [voxel[a], voxel[b]]);
    if (!pos) throw new Error(`voxel ${voxel} is not on the shown slice`);
    return pagePixels(nv.canvas, pos);
  },
  /** The polygons on the shown slice: [{closed, points: [[i, j, k], ...]}] in case voxels. */
  contourPolygons() {
    const k = contours.currentSlice();
    const [a, b] = [0, 1, 2].filter((x) => x !== contours.axis);
    return (contours.slices.get(k)?.polygons || []).map((polygon) => ({
      closed: polygon.closed,
      points: polygon.points.map(([u, v]) => {
        const voxel = [0, 0, 0];
        voxel[contours.axis] = k;
        voxel[a] = u;
        voxel[b] = v;
        return voxel;
      }),
    }));
  },
  currentVoxel,
  moveToVoxel,
  setTool,
  setMode,
  setView,
  pickClass,
  /** How many drawing voxels hold each value. */
  histogram() {
    const counts = {};
    for (const value of drawing()) counts[value] = (counts[value] || 0) + 1;
    return counts;
  },
};

wire();
load().catch(fail);

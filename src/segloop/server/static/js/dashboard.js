// The dashboard: the project's classes, its cases (deciding source per class, rank, who edits), the
// next case to correct, the rounds and the report's plots, and the jobs (start, follow live, cancel, resume).
//
// Plain DOM, no framework: rows are built once per load into a DocumentFragment, then sorting and filtering
// only reorder or hide them (1,000 cases render in a few milliseconds). A project of more than PAGE_SIZE
// cases is paged: the server sorts and filters (`GET /api/cases?offset=&limit=&sort=&filter=`).
// `window.__dashboard` tells tests and benchmarks where the page stands: {ready, cases, rendered, fetchMs,
// renderMs (building and laying out the table), loadedAt (performance.now() when the table was done)}.

import { api, ApiError, el, cssColor, getToken, signOut, streamEvents } from './api.js';

/** The letter shown for a deciding source (the most trusted label version of the class). */
const SOURCE_LETTERS = { original: 'O', revised: 'R', sparse: 'S', draft: 'D', pseudo: 'P' };
const NO_SOURCE = '–';
/** Job statuses after which nothing changes (besides resuming an interrupted one). */
const FINISHED = new Set(['done', 'failed', 'interrupted', 'cancelled']);
/** Report plots of a finished round (loop/report.py writes them). */
const PLOTS = [
  ['dice_per_round.png', 'Dice per class per round'],
  ['sources_per_round.png', 'Labelled cases by source'],
  ['uncertainty_vs_dice.png', 'Uncertainty vs Dice'],
];
const REFRESH_MS = 20_000;
/** Cases fetched at once; a project with more is paged by the server. */
const PAGE_SIZE = 200;
/** The server's name of a column's sort key (routes/cases.py). */
const SORT_KEYS = { n_versions: 'versions' };
/** Numbers of any scale (an uncertainty score, a Dice) with three significant digits. */
const SIGNIFICANT = new Intl.NumberFormat('en', { maximumSignificantDigits: 3 });

const state = {
  project: null,
  rows: [], // [{c: case JSON, tr: HTMLTableRowElement, text: lower-case search text}]
  sort: { key: 'rank', dir: 1 },
  filter: '',
  page: { offset: 0, total: 0, complete: true }, // complete: every case is loaded (sorted and filtered here)
  filterTimer: null,
  followed: new Map(), // job id -> AbortController
  jobs: new Map(), // job id -> element
};

const status = { ready: false, cases: 0, rendered: 0, fetchMs: null, renderMs: null, loadedAt: null };
window.__dashboard = status;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------------
// message line

/** Show one line of news: kind 'error' | 'info' | 'ok'; an empty text clears it. */
function say(text, kind = 'info') {
  const line = $('message');
  line.textContent = text;
  line.className = `message ${kind}`;
}

/** Show an error (an ApiError's detail, or why the server could not be reached). */
function fail(error, what) {
  const detail = error instanceof ApiError ? error.detail || error.title : 'the server cannot be reached';
  say(`${what}: ${detail}`, 'error');
  if (!(error instanceof ApiError)) console.warn(error);
}

// ---------------------------------------------------------------------------------------------------
// project and classes

function renderProject(project) {
  document.title = `segloop: ${project.name}`;
  $('project-name').textContent = project.name;
  $('author').textContent = project.author ? `signed in as ${project.author}` : '';
  $('sign-out').classList.toggle('hidden', !getToken());
  const chips = document.createDocumentFragment();
  for (const cls of project.classes) {
    const chip = el('span', 'chip');
    const swatch = el('span', 'swatch');
    swatch.style.background = cssColor(cls.color);
    chip.append(swatch, el('span', '', `${cls.value} ${cls.name}`));
    chips.append(chip);
  }
  $('classes').replaceChildren(chips);
  const facts = [`${project.n_cases} cases`, `modality ${project.modality}`];
  if (project.window) facts.push(`window ${project.window[0]}/${project.window[1]}`);
  if (project.ignore_value != null) facts.push(`ignore value ${project.ignore_value}`);
  $('project-facts').textContent = facts.join(' · ');
}

// ---------------------------------------------------------------------------------------------------
// cases table

/** Black or white text, whichever reads better on an [r, g, b] background. */
function textOn(rgb) {
  const [r, g, b] = rgb || [128, 128, 128];
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? '#000' : '#fff';
}

function headerCell(text, key, numeric = false) {
  const th = el('th', numeric ? 'num' : '', text);
  if (key) {
    th.classList.add('sortable');
    th.dataset.key = key;
    th.tabIndex = 0;
    th.setAttribute('aria-sort', 'none');
  }
  return th;
}

function renderCasesHead(classes) {
  const row = document.createDocumentFragment();
  row.append(headerCell('case', 'id'));
  for (const cls of classes) {
    const th = el('th', 'class-col');
    const swatch = el('span', 'swatch');
    swatch.style.background = cssColor(cls.color);
    th.append(swatch, document.createTextNode(` ${cls.name}`));
    th.title = `deciding source of ${cls.name}`;
    row.append(th);
  }
  row.append(
    headerCell('rank', 'rank', true),
    headerCell('uncertainty', 'uncertainty', true),
    headerCell('versions', 'n_versions', true),
    headerCell('editing'),
  );
  $('cases-head').replaceChildren(row);
}

/** One table row of a case (built once; sorting and filtering reuse it). */
function caseRow(c, classes) {
  const tr = document.createElement('tr');
  tr.dataset.case = c.id;
  const id = el('td', 'mono');
  const link = el('a', '', c.id);
  link.href = `/edit/${encodeURIComponent(c.id)}`;
  link.title = `edit ${c.id}`;
  id.append(link);
  tr.append(id);
  for (const cls of classes) {
    const source = c.sources ? c.sources[cls.name] : null;
    const td = el('td', 'class-col');
    const letter = el('span', source ? 'source' : 'source none', source ? SOURCE_LETTERS[source] || source[0].toUpperCase() : NO_SOURCE);
    if (source) {
      letter.style.background = cssColor(cls.color);
      letter.style.color = textOn(cls.color);
      letter.title = `${cls.name}: ${source}`;
    } else {
      letter.title = `${cls.name}: no label`;
    }
    td.append(letter);
    tr.append(td);
  }
  tr.append(
    el('td', 'num', c.rank == null ? '' : String(c.rank)),
    el('td', 'num', c.uncertainty == null ? '' : SIGNIFICANT.format(c.uncertainty)),
    el('td', 'num', String(c.n_versions ?? '')),
    el('td', '', (c.editing || []).join(', ')),
  );
  return tr;
}

/** Compare two cases by the current sort key (missing values last, whatever the direction). */
function compareCases(a, b) {
  const { key, dir } = state.sort;
  const x = a.c[key];
  const y = b.c[key];
  if (x == null || y == null) return x == null && y == null ? a.c.id.localeCompare(b.c.id) : x == null ? 1 : -1;
  if (x < y) return -dir;
  if (x > y) return dir;
  return a.c.id.localeCompare(b.c.id, undefined, { numeric: true });
}

/** Put the rows in order and show those the filter keeps. */
function layoutRows() {
  const started = performance.now();
  const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const fragment = document.createDocumentFragment();
  let shown = 0;
  for (const row of state.page.complete ? [...state.rows].sort(compareCases) : state.rows) {
    const keep = words.every((word) => row.text.includes(word));
    row.tr.hidden = !keep;
    shown += keep;
    fragment.append(row.tr);
  }
  $('cases-body').replaceChildren(fragment);
  for (const th of $('cases-head').querySelectorAll('th.sortable')) {
    const sorted = th.dataset.key === state.sort.key;
    th.setAttribute('aria-sort', sorted ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
  }
  const total = state.rows.length;
  const { offset, total: all, complete } = state.page;
  $('case-count').textContent = !complete
    ? `(${shown ? offset + 1 : 0}–${offset + shown} of ${all})`
    : shown === total ? `(${total})` : `(${shown} of ${total})`;
  $('page-prev').classList.toggle('hidden', complete);
  $('page-next').classList.toggle('hidden', complete);
  $('page-prev').disabled = offset === 0;
  $('page-next').disabled = offset + total >= all;
  status.rendered = shown;
  return performance.now() - started;
}

async function loadCases() {
  const started = performance.now();
  const { key, dir } = state.sort;
  const params = new URLSearchParams({
    offset: String(state.page.offset),
    limit: String(PAGE_SIZE),
    sort: `${dir > 0 ? '' : '-'}${SORT_KEYS[key] || key}`,
  });
  const filtered = !state.page.complete && state.filter.trim() !== '';
  if (filtered) params.set('filter', state.filter);
  const { cases, total } = await api(`/api/cases?${params}`);
  const fetched = performance.now();
  state.page.total = total;
  state.page.complete = !filtered && state.page.offset === 0 && cases.length >= total;
  const classes = state.project.classes;
  const first = !state.rows.length;
  if (first) renderCasesHead(classes);
  state.rows = cases.map((c) => ({
    c,
    tr: caseRow(c, classes),
    text: `${c.id} ${(c.editing || []).join(' ')}`.toLowerCase(),
  }));
  layoutRows();
  status.cases = cases.length;
  status.fetchMs = fetched - started;
  status.renderMs = performance.now() - fetched;
  status.loadedAt = performance.now();
}

function sortBy(key) {
  state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
  if (state.page.complete) layoutRows();
  else turnPage(0);
}

/** Load the page of cases from ``offset`` (a paged project). */
function turnPage(offset) {
  state.page.offset = Math.max(0, offset);
  loadCases().catch((error) => fail(error, 'Listing the cases'));
}

async function nextCase() {
  const button = $('next-case');
  button.disabled = true;
  try {
    const next = await api('/api/next');
    window.location.assign(`/edit/${encodeURIComponent(next.case_id)}`);
  } catch (error) {
    fail(error, 'No next case');
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------------
// rounds and report

/** A cell's text for any JSON value: numbers rounded, lists joined, objects as `key value` pairs. */
function cellText(value) {
  if (value == null) return '';
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : SIGNIFICANT.format(value);
  if (Array.isArray(value)) return value.map(cellText).join(', ');
  if (typeof value === 'object') {
    return Object.entries(value)
      .filter(([, v]) => v != null && typeof v !== 'object')
      .map(([k, v]) => `${k} ${cellText(v)}`)
      .join(', ');
  }
  return String(value);
}

/** The columns of the rounds table: heading and how to read it from a round's JSON (routes/jobs.py). */
const ROUND_COLUMNS = [
  ['round', (r) => r.number],
  ['status', (r) => r.status],
  ['mode', (r) => r.mode],
  ['model', (r) => r.model],
  ['cases by source', (r) => Object.entries(r.cases_by_source || {}).filter(([, n]) => n).map(([s, n]) => `${s} ${n}`)],
  ['val. Dice', (r) => r.validation_dice],
  ['eval. Dice', (r) => r.evaluation && r.evaluation.mean && r.evaluation.mean.dice],
  ['HD95 mm', (r) => r.evaluation && r.evaluation.mean && r.evaluation.mean.hd95_mm],
  ['next to correct', (r) => r.queue],
];

async function loadRounds() {
  const { rounds } = await api('/api/rounds');
  $('no-rounds').classList.toggle('hidden', rounds.length > 0);
  $('rounds-wrap').classList.toggle('hidden', rounds.length === 0);
  const head = document.createDocumentFragment();
  for (const [heading] of ROUND_COLUMNS) head.append(el('th', '', heading));
  $('rounds-head').replaceChildren(head);
  const body = document.createDocumentFragment();
  for (const round of [...rounds].reverse()) {
    const tr = document.createElement('tr');
    for (const [, read] of ROUND_COLUMNS) {
      const value = read(round);
      tr.append(el('td', typeof value === 'number' ? 'num' : '', cellText(value)));
    }
    body.append(tr);
  }
  $('rounds-body').replaceChildren(body);
  renderReport(rounds);
}

/** The plots shown: their object URLs (revoked when replaced) and the round they belong to. */
const report = { urls: [], stamp: null };

/** The report's plots, once a round finished (before that the report has none to show). */
function renderReport(rounds) {
  const finished = rounds.filter((r) => r.status === 'done');
  $('no-report').classList.toggle('hidden', finished.length > 0);
  const last = finished[finished.length - 1];
  const stamp = last ? String(last.finished_at || last.number) : null;
  if (stamp === report.stamp) return; // that round's plots are shown already
  report.stamp = stamp;
  for (const url of report.urls.splice(0)) URL.revokeObjectURL(url);
  const plots = document.createDocumentFragment();
  if (last) {
    const queue = (last.queue || []).slice(0, 3);
    const names = [...PLOTS, ...queue.map((id) => [`overlay_${id}.png`, `top-ranked: ${id}`])];
    for (const [name, caption] of names) {
      const figure = el('figure');
      const img = el('img');
      img.alt = caption;
      img.dataset.plot = name;
      figure.append(img, el('figcaption', '', caption));
      plots.append(figure);
      showPlot(name, img, figure);
    }
  }
  $('plots').replaceChildren(plots);
}

/** Fetch a plot with the token (an `<img src>` request carries none); a plot the report lacks is dropped. */
async function showPlot(name, img, figure) {
  try {
    const blob = await api(`/api/report/${encodeURIComponent(name)}`, { as: 'blob', retry: false });
    const url = URL.createObjectURL(blob);
    report.urls.push(url);
    img.src = url;
  } catch {
    figure.remove();
  }
}

// ---------------------------------------------------------------------------------------------------
// jobs

/** The parameters of a job from the small form (empty fields: the server's defaults). */
function jobParams(kind) {
  const params = {};
  if (kind === 'round' || kind === 'train') {
    const minutes = $('job-minutes').value;
    const epochs = $('job-epochs').value;
    if (minutes !== '') params.minutes = Number(minutes);
    if (epochs !== '') params.epochs = Number(epochs);
  } else if (kind === 'predict' && $('job-unlabeled').checked) {
    params.unlabeled = true;
  }
  return params;
}

function showJobFields() {
  const training = ['round', 'train'].includes($('job-kind').value);
  $('job-minutes-label').classList.toggle('hidden', !training);
  $('job-epochs-label').classList.toggle('hidden', !training);
  $('job-unlabeled-label').classList.toggle('hidden', training);
}

function progressText(progress) {
  if (!progress) return '';
  const parts = [progress.stage, progress.message].filter(Boolean);
  if (progress.total) parts.push(`${progress.done}/${progress.total}`);
  const metrics = cellText(progress.metrics || {});
  if (metrics) parts.push(metrics);
  return parts.join(' · ');
}

/** Draw (or redraw) one job's entry. */
function renderJob(job) {
  let box = state.jobs.get(job.id);
  if (!box) {
    box = el('div', 'job');
    box.dataset.job = job.id;
    state.jobs.set(job.id, box);
    $('jobs').prepend(box);
  }
  const head = el('div', 'row');
  head.append(
    el('strong', '', `#${job.id} ${job.kind}`),
    el('span', `status ${job.status}`, job.status),
    el('span', 'muted', job.author ? `by ${job.author}` : ''),
  );
  const running = !FINISHED.has(job.status);
  if (running) {
    const cancel = el('button', 'small danger', 'Cancel');
    cancel.type = 'button';
    cancel.addEventListener('click', () => cancelJob(job.id, cancel));
    head.append(cancel);
  } else if (job.status === 'interrupted' || job.status === 'cancelled') {
    const resume = el('button', 'small', 'Resume');
    resume.type = 'button';
    resume.addEventListener('click', () => resumeJob(job.id, resume));
    head.append(resume);
  }
  const parts = [head];
  const progress = job.progress;
  if (running) {
    const bar = el('progress');
    if (progress && progress.total) {
      bar.max = progress.total;
      bar.value = progress.done;
    }
    parts.push(bar);
  }
  const text = progressText(progress);
  if (text) parts.push(el('div', 'muted', text));
  if (job.error) parts.push(el('div', 'message error', job.error));
  box.replaceChildren(...parts);
}

/** Follow a job's server-sent events until it finishes; then refresh what it changed. */
async function follow(job) {
  renderJob(job);
  if (FINISHED.has(job.status) || state.followed.has(job.id)) return;
  const controller = new AbortController();
  state.followed.set(job.id, controller);
  let last = job;
  try {
    await streamEvents(`/api/jobs/${job.id}/events`, (data) => {
      if (data && typeof data === 'object' && data.id === job.id) {
        last = data;
        renderJob(data);
      }
    }, { signal: controller.signal });
    if (!FINISHED.has(last.status)) {
      last = await api(`/api/jobs/${job.id}`);
      renderJob(last);
    }
    if (last.status === 'done') say(`Job #${job.id} (${job.kind}) finished.`, 'ok');
    else if (last.status === 'failed') say(`Job #${job.id} (${job.kind}) failed: ${last.error || ''}`, 'error');
    await refreshData();
  } catch (error) {
    if (error.name !== 'AbortError') fail(error, `Following job #${job.id}`);
  } finally {
    state.followed.delete(job.id);
  }
}

async function startJob(event) {
  event.preventDefault();
  const kind = $('job-kind').value;
  const button = $('job-start');
  button.disabled = true;
  try {
    const job = await api('/api/jobs', { method: 'POST', json: { kind, params: jobParams(kind) } });
    say(`Job #${job.id} (${kind}) started.`, 'info');
    follow(job);
  } catch (error) {
    fail(error, `Starting a ${kind} job`);
  } finally {
    button.disabled = false;
  }
}

async function cancelJob(id, button) {
  button.disabled = true;
  try {
    const job = await api(`/api/jobs/${id}`, { method: 'DELETE' });
    if (job) renderJob(job);
  } catch (error) {
    button.disabled = false;
    fail(error, `Cancelling job #${id}`);
  }
}

async function resumeJob(id, button) {
  button.disabled = true;
  try {
    const job = await api(`/api/jobs/${id}/resume`, { method: 'POST' });
    say(`Job #${job.id} (${job.kind}) resumed.`, 'info');
    follow(job);
  } catch (error) {
    button.disabled = false;
    fail(error, `Resuming job #${id}`);
  }
}

async function loadJobs() {
  const { jobs } = await api('/api/jobs');
  jobs.sort((a, b) => a.id - b.id);
  for (const job of jobs.slice(-10)) follow(job);
}

// ---------------------------------------------------------------------------------------------------
// start

async function refreshData() {
  await Promise.all([loadCases(), loadRounds()]).catch((error) => fail(error, 'Refreshing'));
}

function wire() {
  $('next-case').addEventListener('click', nextCase);
  $('filter').addEventListener('input', (event) => {
    state.filter = event.target.value;
    if (state.page.complete) layoutRows();
    else {
      clearTimeout(state.filterTimer);
      state.filterTimer = setTimeout(() => turnPage(0), 250);
    }
  });
  $('page-prev').addEventListener('click', () => turnPage(state.page.offset - PAGE_SIZE));
  $('page-next').addEventListener('click', () => turnPage(state.page.offset + PAGE_SIZE));
  $('cases-head').addEventListener('click', (event) => {
    const th = event.target.closest('th.sortable');
    if (th) sortBy(th.dataset.key);
  });
  $('cases-head').addEventListener('keydown', (event) => {
    const th = event.target.closest('th.sortable');
    if (th && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      sortBy(th.dataset.key);
    }
  });
  $('job-kind').addEventListener('change', showJobFields);
  $('job-form').addEventListener('submit', startJob);
  $('sign-out').addEventListener('click', () => {
    signOut();
    window.location.reload();
  });
  showJobFields();
  setInterval(() => {
    if (!document.hidden && state.project) loadCases().catch(() => {});
  }, REFRESH_MS);
}

async function main() {
  wire();
  try {
    state.project = await api('/api/project');
  } catch (error) {
    fail(error, 'Opening the project');
    return;
  }
  renderProject(state.project);
  const parts = [
    loadCases().catch((error) => fail(error, 'Listing the cases')),
    loadRounds().catch((error) => fail(error, 'Listing the rounds')),
    loadJobs().catch((error) => fail(error, 'Listing the jobs')),
  ];
  await Promise.all(parts);
  status.ready = true;
}

main();

// The segloop API from the browser: one `api()` call per request, sign-in on 401, problem JSON as ApiError.
//
// Used by the dashboard (dashboard.js) and the editor (editor*.js). No framework, no build step.
//
//   import { api, ApiError } from '/static/js/api.js';
//   const project = await api('/api/project');
//   const blob = await api(`/api/cases/${id}/label.nii.gz`, { as: 'blob' });
//   await api(`/api/cases/${id}/label`, { method: 'PUT', body: bytes, headers: { 'If-Match': etag } });

/** localStorage key of the bearer token. */
export const TOKEN_KEY = 'segloop.token';

/** A problem JSON answer (or any non-2xx answer): `status`, `title`, `detail` and the whole `body`. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status.
   * @param {string} title short title of the problem.
   * @param {string} detail one line: what was expected and what came.
   * @param {object|string|null} body the parsed problem JSON (or the text of a non-JSON answer).
   */
  constructor(status, title, detail, body) {
    super(detail || title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.body = body;
  }
}

/** The stored token, or null. */
export function getToken() {
  try {
    return window.localStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage disabled (private mode, sandboxed frame)
  }
}

/** Store (or with null/'' forget) the token. */
export function setToken(token) {
  try {
    if (token) window.localStorage.setItem(TOKEN_KEY, token);
    else window.localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lives for this page only
  }
  memoryToken = token || null;
}

let memoryToken = null;
let pendingSignIn = null;

function currentToken() {
  return getToken() || memoryToken;
}

/** The headers of a request: the caller's plus `Authorization: Bearer <token>` when a token is known. */
export function authHeaders(headers = {}) {
  const merged = new Headers(headers);
  const token = currentToken();
  if (token && !merged.has('Authorization')) merged.set('Authorization', `Bearer ${token}`);
  return merged;
}

/**
 * Ask for a token in a small modal form; resolves true when one was entered, false when cancelled.
 * Concurrent callers share one prompt.
 *
 * @param {string} [reason] the server's detail, shown above the field.
 * @returns {Promise<boolean>}
 */
export function signIn(reason = '') {
  if (pendingSignIn) return pendingSignIn;
  pendingSignIn = new Promise((resolve) => {
    const dialog = document.createElement('dialog');
    dialog.className = 'sign-in';
    const form = document.createElement('form');
    form.method = 'dialog';
    const heading = document.createElement('h2');
    heading.textContent = 'Sign in';
    const note = document.createElement('p');
    note.textContent = reason || 'This server needs your token (from `segloop user add`).';
    const label = document.createElement('label');
    label.textContent = 'Token ';
    const field = document.createElement('input');
    field.type = 'password';
    field.name = 'token';
    field.autocomplete = 'current-password';
    field.required = true;
    label.append(field);
    const buttons = document.createElement('div');
    buttons.className = 'buttons';
    const ok = document.createElement('button');
    ok.type = 'submit';
    ok.value = 'ok';
    ok.textContent = 'Sign in';
    ok.className = 'primary';
    const cancel = document.createElement('button');
    cancel.type = 'button';
    cancel.textContent = 'Cancel';
    buttons.append(ok, cancel);
    form.append(heading, note, label, buttons);
    dialog.append(form);
    document.body.append(dialog);
    const finish = (entered) => {
      if (entered) setToken(field.value.trim());
      dialog.remove();
      pendingSignIn = null;
      resolve(entered);
    };
    cancel.addEventListener('click', () => dialog.close('cancel'));
    dialog.addEventListener('close', () => finish(dialog.returnValue === 'ok' && field.value.trim() !== ''));
    dialog.showModal();
    field.focus();
  });
  return pendingSignIn;
}

/** Forget the token (sign out). */
export function signOut() {
  setToken(null);
}

/**
 * Read an error answer as an ApiError (problem JSON when the server sent one).
 *
 * @param {Response} response a non-2xx response.
 * @returns {Promise<ApiError>}
 */
export async function errorOf(response) {
  const text = await response.text().catch(() => '');
  let body = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  if (body && typeof body === 'object') {
    return new ApiError(response.status, body.title || response.statusText, body.detail || '', body);
  }
  return new ApiError(response.status, response.statusText, String(text || '').slice(0, 200), body);
}

/**
 * One request to the server.
 *
 * @param {string} path the URL (usually `/api/...`).
 * @param {object} [options]
 * @param {string} [options.method='GET']
 * @param {any} [options.json] a value sent as JSON (sets Content-Type).
 * @param {BodyInit} [options.body] a raw body (bytes, Blob, FormData).
 * @param {HeadersInit} [options.headers] more headers.
 * @param {'json'|'blob'|'arrayBuffer'|'text'|'response'} [options.as='json'] how to read a 2xx answer;
 *   'response' gives the Response itself (headers such as ETag, streaming bodies). A 204 reads as null.
 * @param {AbortSignal} [options.signal]
 * @param {boolean} [options.retry=true] on 401, prompt for a token and retry once.
 * @returns {Promise<any>} the parsed answer.
 * @throws {ApiError} on a non-2xx answer (after the sign-in retry); a TypeError when the server is unreachable.
 */
export async function api(path, options = {}) {
  const { method = 'GET', json, body, headers = {}, as = 'json', signal, retry = true } = options;
  const sent = authHeaders(headers);
  let payload = body;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    sent.set('Content-Type', 'application/json');
  }
  if (as === 'json' && !sent.has('Accept')) sent.set('Accept', 'application/json');
  const response = await fetch(path, { method, headers: sent, body: payload, signal });
  if (response.status === 401 && retry) {
    const error = await errorOf(response);
    if (await signIn(error.detail)) return api(path, { ...options, retry: false });
    throw error;
  }
  if (!response.ok) throw await errorOf(response);
  if (as === 'response') return response;
  if (response.status === 204) return null;
  if (as === 'blob') return response.blob();
  if (as === 'arrayBuffer') return response.arrayBuffer();
  if (as === 'text') return response.text();
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/**
 * Follow a server-sent-events stream with fetch (so the Authorization header travels; EventSource cannot).
 * Calls `onEvent(data)` with each event's parsed `data:` JSON; resolves when the stream ends.
 *
 * @param {string} path e.g. `/api/jobs/<id>/events`.
 * @param {(data: any, event: string) => void} onEvent
 * @param {{signal?: AbortSignal}} [options]
 * @returns {Promise<void>}
 * @throws {ApiError} when the stream cannot be opened.
 */
export async function streamEvents(path, onEvent, { signal } = {}) {
  const response = await api(path, { as: 'response', headers: { Accept: 'text/event-stream' }, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block, onEvent);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  const text = data.join('\n');
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // plain text event
  }
  onEvent(parsed, event);
}

/** A new element with a class and text content (text, never HTML: names from the server stay inert). */
export function el(tag, className = '', text = '') {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== '') node.textContent = text;
  return node;
}

/** `rgb(r, g, b)` of a class colour `[r, g, b]` (0-255). */
export function cssColor(rgb) {
  return Array.isArray(rgb) && rgb.length >= 3 ? `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})` : 'currentColor';
}

// Tollgate admin console: a client of the admin API (docs/admin-api.md) in
// the browser. It holds the admin's bearer token in sessionStorage (gone when
// the tab closes), sends it on every call, and offers only what the token's
// role may do (the table below mirrors `may` in
// host/src/control/admin/api/mod.rs; the API checks again on every call).
// Everything shown is set as text (textContent), never as HTML.
'use strict';

const API = '/admin/v1';
const TOKEN = 'tollgate-admin-token';

// Resource families whose writes a role may make (reads: every role but
// users and audit).
const WRITES = {
  'api-manager': ['apis', 'products', 'plans'],
  'community-manager': ['consumers', 'apps', 'subscriptions', 'keys'],
  'reports-user': [],
};
const ADMIN_ONLY = ['users', 'audit'];

const state = { token: sessionStorage.getItem(TOKEN), user: null, role: null };

function may(family, write) {
  if (state.role === 'administrator') return true;
  if (ADMIN_ONLY.includes(family)) return false;
  if (!write) return true;
  return (WRITES[state.role] || []).includes(family);
}

// ---------------------------------------------------------------------------
// DOM helpers: text only.

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(text, kind) {
  const s = document.getElementById('status');
  s.textContent = text || '';
  s.className = 'status' + (kind ? ' ' + kind : '');
}

function cell(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// ---------------------------------------------------------------------------
// The admin API.

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body, headers) {
  const init = { method, headers: { authorization: 'Bearer ' + state.token, ...(headers || {}) } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, init);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!r.ok) {
    const msg = (json && json.error && json.error.message) || r.statusText || String(r.status);
    if (r.status === 401) signOut('Your token is not valid any more: sign in again.');
    throw new ApiError(r.status, msg);
  }
  return { json, etag: r.headers.get('etag') };
}

async function guarded(what, f) {
  try {
    await f();
  } catch (e) {
    show(what + ': ' + e.message, 'error');
  }
}

// ---------------------------------------------------------------------------
// Forms.

// A field: {name, label, type: 'text'|'number'|'check'|'select'|'json'|'list', options, value}
function field(f) {
  const id = 'f-' + f.name;
  if (f.type === 'check') {
    return h('div', { class: 'field check' },
      h('input', { id, name: f.name, type: 'checkbox', checked: f.value ? true : undefined }),
      h('label', { for: id, text: f.label }));
  }
  let input;
  if (f.type === 'select') {
    input = h('select', { id, name: f.name },
      f.options.map((o) => h('option', { value: o, selected: o === f.value ? true : undefined, text: o })));
  } else if (f.type === 'json') {
    input = h('textarea', { id, name: f.name, spellcheck: 'false' });
    input.value = f.value === undefined ? '' : JSON.stringify(f.value, null, 2);
  } else {
    input = h('input', { id, name: f.name, type: f.type === 'number' ? 'number' : 'text', required: f.required ? true : undefined, autocomplete: 'off' });
    if (f.value !== undefined) input.value = f.value;
  }
  return h('div', { class: 'field' }, h('label', { for: id, text: f.label }), input);
}

function readForm(form, fields) {
  const out = {};
  for (const f of fields) {
    const el = form.elements[f.name];
    if (f.type === 'check') { out[f.name] = el.checked; continue; }
    const v = el.value.trim();
    if (v === '') continue;
    if (f.type === 'number') out[f.name] = Number(v);
    else if (f.type === 'json') out[f.name] = JSON.parse(v);
    else if (f.type === 'list') out[f.name] = v.split(',').map((s) => s.trim()).filter(Boolean);
    else out[f.name] = v;
  }
  return out;
}

function createForm(title, fields, submit) {
  const form = h('form', { class: 'card', 'aria-label': title },
    h('h2', { text: title }), fields.map(field), h('button', { type: 'submit', text: 'Create' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded(title, async () => {
      let body;
      try { body = readForm(form, fields); } catch (e) { throw new Error('a JSON field does not parse: ' + e.message); }
      await submit(body);
    });
  });
  return form;
}

// A secret shown once, with what it is.
function secretBox(label, value) {
  return h('div', { class: 'card', role: 'alert' },
    h('p', { text: label + ' — shown only this once; only its SHA-256 is stored. Keep it now:' }),
    h('p', { class: 'secret', 'data-secret': '', text: value }));
}

// ---------------------------------------------------------------------------
// Resource lists.

const RESOURCES = {
  products: {
    one: 'product', title: 'Products', family: 'products',
    columns: ['id', 'name', 'apis', 'published', 'access', 'visible_to'],
    create: [
      { name: 'id', label: 'Id', required: true }, { name: 'name', label: 'Name' },
      { name: 'description', label: 'Description' },
      { name: 'apis', label: 'APIs (comma-separated)', type: 'list' },
      { name: 'published', label: 'Published in the portal', type: 'check' },
      { name: 'access', label: 'Access', type: 'select', options: ['protected', 'authenticated', 'anonymous'], value: 'protected' },
      { name: 'visible_to', label: 'Visible to groups (comma-separated; empty: developers)', type: 'list' },
    ],
  },
  plans: {
    one: 'plan', title: 'Plans', family: 'plans',
    columns: ['id', 'product', 'name', 'approval', 'rate_limits', 'quota', 'scopes'],
    create: [
      { name: 'id', label: 'Id', required: true }, { name: 'product', label: 'Product', required: true },
      { name: 'name', label: 'Name' }, { name: 'description', label: 'Description' },
      { name: 'approval', label: 'Approval', type: 'select', options: ['self-service', 'moderated'], value: 'self-service' },
      { name: 'rate_limits', label: 'Rate limits (JSON)', type: 'json', value: [] },
      { name: 'quota', label: 'Quota (JSON, or empty)', type: 'json' },
      { name: 'max_keys_per_app', label: 'Keys per app', type: 'number', value: 2 },
      { name: 'scopes', label: 'OAuth scopes (comma-separated)', type: 'list' },
    ],
  },
  consumers: {
    one: 'consumer', title: 'Consumers', family: 'consumers',
    columns: ['id', 'name', 'email'],
    create: [{ name: 'id', label: 'Id', required: true }, { name: 'name', label: 'Name' }, { name: 'email', label: 'Email' }],
  },
  groups: {
    one: 'group', title: 'Groups', family: 'consumers',
    columns: ['id', 'name', 'system', 'description'],
    create: [
      { name: 'id', label: 'Id', required: true }, { name: 'name', label: 'Name' },
      { name: 'description', label: 'Description' },
    ],
  },
  apps: {
    one: 'app', title: 'Apps', family: 'apps',
    columns: ['id', 'consumer', 'name'],
    create: [
      { name: 'id', label: 'Id', required: true }, { name: 'consumer', label: 'Consumer', required: true },
      { name: 'name', label: 'Name' }, { name: 'description', label: 'Description' },
    ],
  },
  subscriptions: {
    one: 'subscription', title: 'Subscriptions', family: 'subscriptions',
    columns: ['id', 'app', 'plan', 'product', 'state'],
    create: [{ name: 'app', label: 'App', required: true }, { name: 'plan', label: 'Plan', required: true }],
    secret: (v) => ['Primary and secondary keys of ' + v.id, 'primary: ' + v.secrets.primary + '  secondary: ' + v.secrets.secondary],
    actions: (s) => ({
      pending: [['Approve', 'active'], ['Reject', 'rejected']],
      active: [['Suspend', 'suspended']],
      suspended: [['Resume', 'active']],
    }[s.state] || []).map(([label, to]) => ({
      label, run: () => api('PATCH', '/subscriptions/' + s.id, { state: to }),
    })).concat(s.state === 'rejected' ? [] : ['primary', 'secondary'].map((slot) => ({
      label: 'Regenerate ' + slot + ' key',
      secret: (v) => ['The ' + slot + ' key of ' + v.subscription.id, v.secret],
      run: () => api('POST', '/subscriptions/' + s.id + '/keys/' + slot + '/regenerate', {}),
    }))),
  },
  keys: {
    one: 'API key', title: 'API keys', family: 'keys',
    columns: ['id', 'app', 'plan', 'prefix', 'expires_at', 'revoked_at'],
    create: [{ name: 'app', label: 'App', required: true }, { name: 'plan', label: 'Plan', required: true }, { name: 'name', label: 'Name' }],
    secret: (v) => ['Key ' + v.key.id, v.secret],
    actions: (k) => k.revoked_at ? [] : [
      { label: 'Rotate', secret: (v) => ['Key ' + v.key.id, v.secret], run: () => api('POST', '/keys/' + k.id + '/rotate', { overlap_seconds: 3600 }) },
      { label: 'Revoke', danger: true, run: () => api('POST', '/keys/' + k.id + '/revoke', {}) },
    ],
  },
  'oauth-clients': {
    one: 'OAuth client', title: 'OAuth clients', family: 'keys',
    columns: ['id', 'app', 'plan', 'name', 'revoked_at'],
    create: [{ name: 'app', label: 'App', required: true }, { name: 'plan', label: 'Plan', required: true }, { name: 'name', label: 'Name' }],
    secret: (v) => ['Client ' + v.client_id + ' secret', v.client_secret],
    actions: (c) => c.revoked_at ? [] : [
      { label: 'Rotate', secret: (v) => ['Client ' + v.client_id + ' secret', v.client_secret], run: () => api('POST', '/oauth-clients/' + c.id + '/rotate', { overlap_seconds: 3600 }) },
      { label: 'Revoke', danger: true, run: () => api('POST', '/oauth-clients/' + c.id + '/revoke', {}) },
    ],
  },
  accounts: {
    title: 'Portal accounts', family: 'consumers', noDelete: true,
    columns: ['id', 'consumer', 'email', 'name', 'state'],
    actions: (a) => ({
      pending: [['Approve', 'approve']],
      active: [['Disable', 'disable']],
      disabled: [['Enable', 'enable']],
    }[a.state] || []).map(([label, action]) => ({
      label, danger: action === 'disable',
      run: () => api('POST', '/accounts/' + a.id + '/' + action, {}),
    })),
  },
  users: {
    one: 'admin user', title: 'Admin users', family: 'users',
    columns: ['id', 'role', 'created_at'],
    create: [
      { name: 'id', label: 'Id', required: true },
      { name: 'role', label: 'Role', type: 'select', options: ['administrator', 'api-manager', 'community-manager', 'reports-user'], value: 'reports-user' },
    ],
    secret: (v) => ['Token of ' + v.user.id, v.token],
    actions: (u) => [{ label: 'New token', secret: (v) => ['Token of ' + v.user.id, v.token], run: () => api('POST', '/users/' + u.id + '/token', {}) }],
  },
};

async function listView(name) {
  const r = RESOURCES[name];
  const main = h('div', null, h('h1', { text: r.title }));
  const { json } = await api('GET', '/' + name + '?limit=500');
  const writable = may(r.family, true);
  const notices = h('div');
  const rerender = async (notice) => {
    await render();
    if (notice) document.getElementById('notices').append(notice);
  };
  if (writable && r.create) {
    main.append(createForm('New ' + r.one, r.create, async (body) => {
      const { json: made } = await api('POST', '/' + name, body);
      show('Created.', 'ok');
      await rerender(r.secret ? secretBox(...r.secret(made)) : null);
    }));
  }
  main.append(h('div', { id: 'notices' }, notices));
  const table = h('table', null,
    h('thead', null, h('tr', null, r.columns.map((c) => h('th', { scope: 'col', text: c })),
      writable ? h('th', { scope: 'col', text: 'actions' }) : null)),
    h('tbody', null, json.items.map((item) => h('tr', null,
      r.columns.map((c) => h('td', { text: cell(item[c]) })),
      writable ? h('td', null, rowActions(name, r, item, rerender)) : null))));
  main.append(table);
  if (json.next) main.append(h('p', { class: 'muted', text: 'Showing the first 500; use the CLI or the API for the rest.' }));
  return main;
}

function rowActions(name, r, item, rerender) {
  const acts = (r.actions ? r.actions(item) : []).map((a) => h('button', {
    type: 'button', class: a.danger ? 'danger' : 'quiet',
    'aria-label': a.label + ' ' + (item.id || ''),
    onclick: () => guarded(a.label, async () => {
      const { json } = await a.run();
      show(a.label + ': done.', 'ok');
      await rerender(a.secret ? secretBox(...a.secret(json)) : null);
    }),
    text: a.label,
  }));
  if (r.noDelete) return acts;
  acts.push(h('button', {
    type: 'button', class: 'danger', 'aria-label': 'Delete ' + item.id,
    onclick: () => guarded('Delete', async () => {
      if (!window.confirm('Delete ' + item.id + '?')) return;
      await api('DELETE', '/' + name + '/' + encodeURIComponent(item.id));
      show('Deleted ' + item.id + '.', 'ok');
      await rerender();
    }),
    text: 'Delete',
  }));
  return acts;
}

// ---------------------------------------------------------------------------
// APIs and their chains.

async function apisView() {
  const { json } = await api('GET', '/apis?limit=500');
  return h('div', null, h('h1', { text: 'APIs' }),
    h('table', null,
      h('thead', null, h('tr', null, ['name', 'routes', 'chain', 'manifest'].map((c) => h('th', { scope: 'col', text: c })))),
      h('tbody', null, json.items.map((a) => h('tr', null,
        h('td', null, h('a', { href: '#/apis/' + encodeURIComponent(a.name), text: a.name })),
        h('td', { class: 'num', text: String((a.routes || []).length) }),
        h('td', { text: (a.chain || []).map((s) => s.plugin).join(' → ') }),
        h('td', { text: a.manifest || '' }))))));
}

async function apiView(name) {
  const { json: a } = await api('GET', '/apis/' + encodeURIComponent(name));
  const { json: chain, etag } = await api('GET', '/apis/' + encodeURIComponent(name) + '/chain');
  const main = h('div', null, h('h1', { text: 'API ' + a.name }),
    h('p', { class: 'muted', text: 'Upstream: ' + ((a.upstream && a.upstream.targets) || []).join(', ') }),
    h('h2', { text: 'Routes' }),
    h('table', null,
      h('thead', null, h('tr', null, ['name', 'path', 'prefix', 'methods'].map((c) => h('th', { scope: 'col', text: c })))),
      h('tbody', null, (a.routes || []).map((r) => h('tr', null,
        h('td', { text: r.name || '' }), h('td', { text: r.path || '' }), h('td', { text: r.prefix || '' }),
        h('td', { text: (r.methods || []).join(', ') }))))),
    h('h2', { text: 'Policy chain' }));
  if (!may('apis', true)) {
    main.append(h('pre', { text: JSON.stringify(chain.chain, null, 2) }));
    return main;
  }
  const fields = [{ name: 'chain', label: 'Chain (JSON; checked like tollgate check before anything is written)', type: 'json', value: chain.chain }];
  const form = h('form', { class: 'card', 'aria-label': 'Edit the chain' }, fields.map(field),
    h('button', { type: 'submit', text: 'Save the chain' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded('Saving the chain', async () => {
      const body = readForm(form, fields);
      const { json: saved } = await api('PUT', '/apis/' + encodeURIComponent(name) + '/chain', body, { 'if-match': etag || chain.etag });
      show('Saved: generation ' + saved.generation + '.', 'ok');
      await render();
    });
  });
  main.append(form);
  return main;
}

// ---------------------------------------------------------------------------
// Audit log and dashboard.

async function auditView() {
  const { json } = await api('GET', '/audit?limit=500');
  const cols = ['seq', 'at', 'actor', 'action', 'resource', 'id'];
  return h('div', null, h('h1', { text: 'Audit log' }),
    h('table', null,
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', text: c })))),
      h('tbody', null, json.items.slice().reverse().map((e) => h('tr', null, cols.map((c) => h('td', { text: cell(e[c]) })))))));
}

function barChart(rows, label, value) {
  const NS = 'http://www.w3.org/2000/svg';
  const max = Math.max(1, ...rows.map(value));
  const w = 640, bar = 22, gap = 8, left = 160;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('width', String(w));
  svg.setAttribute('height', String(rows.length * (bar + gap) + gap));
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'Calls by API over the last 24 hours');
  rows.forEach((r, i) => {
    const y = gap + i * (bar + gap);
    const t = document.createElementNS(NS, 'text');
    t.setAttribute('x', '0'); t.setAttribute('y', String(y + bar * 0.7));
    t.textContent = label(r);
    const rect = document.createElementNS(NS, 'rect');
    rect.setAttribute('x', String(left)); rect.setAttribute('y', String(y));
    rect.setAttribute('height', String(bar));
    rect.setAttribute('width', String(Math.max(1, ((w - left - 60) * value(r)) / max)));
    const n = document.createElementNS(NS, 'text');
    n.setAttribute('x', String(left + 4 + ((w - left - 60) * value(r)) / max)); n.setAttribute('y', String(y + bar * 0.7));
    n.textContent = String(value(r));
    svg.append(t, rect, n);
  });
  return svg;
}

// What waits for an administrator: sign-ups and subscriptions.
async function queueView() {
  const [accounts, subs] = await Promise.all([
    api('GET', '/accounts?state=pending&limit=500').then((r) => r.json.items, () => []),
    api('GET', '/subscriptions?state=pending&limit=500').then((r) => r.json.items, () => []),
  ]);
  return h('section', { 'aria-labelledby': 'queue' },
    h('h2', { id: 'queue', text: 'Waiting for approval' }),
    h('ul', null,
      h('li', null, h('a', { href: '#/accounts', text: accounts.length + ' portal account(s)' })),
      h('li', null, h('a', { href: '#/subscriptions', text: subs.length + ' subscription(s)' }))));
}

async function dashboardView() {
  const main = h('div', null, h('h1', { text: 'Dashboard' }));
  if (may('consumers', true) || may('subscriptions', true)) main.append(await queueView());
  main.append(h('h2', { text: 'Calls by API, last 24 hours' }));
  let report;
  try {
    ({ json: report } = await api('GET', '/analytics/report?from=-24h&by=api'));
  } catch (e) {
    if (e.status === 404) {
      main.append(h('p', { text: 'The analytics store is off: add an [analytics] section to the gateway file.' }));
      return main;
    }
    throw e;
  }
  const rows = report.rows || [];
  if (!rows.length) main.append(h('p', { text: 'No calls in the last 24 hours.' }));
  else main.append(barChart(rows, (r) => (r.api || '(none)'), (r) => r.calls));
  const ms = (us) => (us === null || us === undefined ? '' : (us / 1000).toFixed(1));
  const cols = [
    ['api', (r) => r.api || '(none)'], ['calls', (r) => r.calls], ['4xx', (r) => r.errors_4xx],
    ['5xx', (r) => r.errors_5xx], ['p50 ms', (r) => ms(r.latency_us && r.latency_us.p50)],
    ['p95 ms', (r) => ms(r.latency_us && r.latency_us.p95)], ['p99 ms', (r) => ms(r.latency_us && r.latency_us.p99)],
  ];
  main.append(h('table', null,
    h('thead', null, h('tr', null, cols.map(([c], i) => h('th', { scope: 'col', class: i ? 'num' : null, text: c })))),
    h('tbody', null, rows.map((r) => h('tr', null, cols.map(([, f], i) => h('td', { class: i ? 'num' : null, text: cell(f(r)) })))))));
  return main;
}

// ---------------------------------------------------------------------------
// Sign-in, navigation, routing.

function signInView(message) {
  const form = h('form', { class: 'card', 'aria-label': 'Sign in' },
    h('h1', { text: 'Sign in' }),
    message ? h('p', { role: 'alert', text: message }) : null,
    h('div', { class: 'field' },
      h('label', { for: 'token', text: 'Admin token' }),
      h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true })),
    h('p', { class: 'muted', text: 'The token of an admin user (tollgate admin init, or POST /admin/v1/users). It stays in this tab only.' }),
    h('button', { type: 'submit', text: 'Sign in' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = form.elements.token.value.trim();
    guarded('Sign-in', async () => {
      try {
        await whoami();
      } catch (e) {
        state.token = null;
        throw e;
      }
      sessionStorage.setItem(TOKEN, state.token);
      location.hash = '#/';
      await render();
    });
  });
  return form;
}

async function whoami() {
  const { json } = await api('GET', '/whoami');
  state.user = json.user;
  state.role = json.role;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  state.token = state.user = state.role = null;
  document.getElementById('nav').hidden = true;
  document.getElementById('signout').hidden = true;
  document.getElementById('who').textContent = '';
  const main = document.getElementById('main');
  main.replaceChildren(signInView(message));
}

const SECTIONS = [
  ['', 'Dashboard', null],
  ['apis', 'APIs', 'apis'],
  ['products', 'Products', 'products'],
  ['plans', 'Plans', 'plans'],
  ['consumers', 'Consumers', 'consumers'],
  ['groups', 'Groups', 'consumers'],
  ['apps', 'Apps', 'apps'],
  ['subscriptions', 'Subscriptions', 'subscriptions'],
  ['accounts', 'Portal accounts', 'consumers'],
  ['keys', 'API keys', 'keys'],
  ['oauth-clients', 'OAuth clients', 'keys'],
  ['users', 'Admin users', 'users'],
  ['audit', 'Audit log', 'audit'],
];

function navView(current) {
  const nav = document.getElementById('nav');
  nav.replaceChildren(...SECTIONS
    .filter(([, , family]) => !family || may(family, false))
    .map(([path, label]) => h('a', { href: '#/' + path, 'aria-current': path === current ? 'page' : undefined, text: label })));
  nav.hidden = false;
}

// Each render's number: a render that finishes after a newer one began
// (a slow page, then a click elsewhere) is dropped, never shown over it.
let renders = 0;

async function render() {
  const seq = ++renders;
  const main = document.getElementById('main');
  if (!state.token) {
    main.replaceChildren(signInView());
    return;
  }
  if (!state.role) {
    try { await whoami(); } catch (e) { if (e.status !== 401) show(e.message, 'error'); return; }
    if (seq !== renders) return;
  }
  document.getElementById('who').textContent = state.user + ' (' + state.role + ')';
  document.getElementById('signout').hidden = false;
  const route = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [section, rest] = [route.split('/')[0], route.split('/').slice(1).join('/')];
  navView(section);
  let view;
  try {
    if (section === '') view = await dashboardView();
    else if (section === 'apis' && rest) view = await apiView(rest);
    else if (section === 'apis') view = await apisView();
    else if (section === 'audit' && may('audit', false)) view = await auditView();
    else if (RESOURCES[section] && may(RESOURCES[section].family, false)) view = await listView(section);
    else view = h('p', { text: 'There is no such page, or your role may not see it.' });
  } catch (e) {
    view = h('p', { role: 'alert', text: 'Could not load this page: ' + e.message });
  }
  if (seq !== renders) return;
  main.replaceChildren(view);
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', () => { show(''); render(); });
  render();
});

// Tern's management UI: plain DOM, no framework. Queue and exchange names, payloads, headers
// and client properties come from AMQP peers, so every element is built with createElement and
// every piece of data goes in as textContent: nothing is ever parsed as HTML.
'use strict';

const POLL_MS = 5000;
const HISTORY = 60; // chart samples kept: five minutes at POLL_MS
const AUTH_KEY = 'tern-auth';
const USER_KEY = 'tern-user';

// ---- DOM ------------------------------------------------------------------------------------

// el('a', {href: '#/x', onclick: f}, 'text', node, [more]) — strings become text nodes.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const $ = (id) => document.getElementById(id);

function text(v) {
  if (v == null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

const num = (n) => (typeof n === 'number' ? n.toLocaleString('en') : '');

// cols: [[title, row => string | Node, 'num'?]]
function table(cols, rows, props) {
  if (!rows.length) return el('p', {class: 'empty'}, 'Nothing to show.');
  const head = el('tr', {}, cols.map((c) => el('th', {class: c[2]}, c[0])));
  const body = rows.map((r) => el('tr', {}, cols.map((c) => el('td', {class: c[2]}, c[1](r)))));
  return el('table', props, el('thead', {}, head), el('tbody', {}, body));
}

function facts(pairs) {
  return el('table', {class: 'facts'},
    pairs.filter(([, v]) => v !== undefined) // what this server does not report
      .map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, text(v)))));
}

const pre = (v) => el('pre', {}, typeof v === 'string' ? v : JSON.stringify(v, null, 2));

function flash(message, kind) {
  const f = $('flash');
  f.textContent = message || '';
  f.className = kind || '';
}

// ---- API ------------------------------------------------------------------------------------

let auth = sessionStorage.getItem(AUTH_KEY);

function basicAuth(user, password) {
  const bytes = new TextEncoder().encode(user + ':' + password);
  return 'Basic ' + btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(''));
}

// '/queues/' + encoded parts: a vhost '/' is '%2F', as RabbitMQ's paths want it.
const path = (...parts) => '/' + parts.map(encodeURIComponent).join('/');

class ApiError extends Error {
  constructor(status, body) {
    const why = body && typeof body === 'object' ? [body.error, body.reason] : [body];
    super(`${status}: ${why.filter(Boolean).map(text).join(': ') || 'request failed'}`);
    this.status = status;
    this.reason = body && body.reason;
  }
}

// credentials 'omit': a 401 must not open the browser's own login prompt.
async function request(authorization, method, url, body, headers) {
  const opts = {method, credentials: 'omit', headers: {authorization, ...headers}};
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const resp = await fetch('api' + url, opts);
  const raw = await resp.text();
  let data = raw;
  try { data = raw ? JSON.parse(raw) : null; } catch (_) { /* not JSON: keep the text */ }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

async function api(method, url, body, headers) {
  try {
    return await request(auth, method, url, body, headers);
  } catch (e) {
    if (e.status === 401 && e.reason === 'Not_Authorized') logout('Your login is no longer valid.');
    throw e;
  }
}

const get = (url) => api('GET', url);

// Run a user's action: its result in the flash line, then fresh data (or, after deleting
// what the view shows, the list at `goTo`, with the result kept for it).
async function act(action, done, goTo) {
  flash('');
  try {
    await action();
  } catch (e) {
    return flash(e.message, 'error');
  }
  if (goTo) {
    nextFlash = done;
    location.hash = goTo;
    return;
  }
  if (done) flash(done, 'ok');
  await refresh();
}

// ---- forms ----------------------------------------------------------------------------------

const input = (name, props) => el('input', {name, ...props});

function select(name, options, selected) {
  return el('select', {name}, options.map(([value, label]) =>
    el('option', {value, selected: value === selected}, label)));
}

const field = (label, control) => el('label', {}, label, ' ', control);

function form(title, controls, button, onsubmit) {
  const f = el('form', {class: 'inline'}, controls, el('button', {type: 'submit'}, button));
  f.addEventListener('submit', (ev) => {
    ev.preventDefault();
    onsubmit(f.elements, f);
  });
  return el('div', {class: 'box'}, el('h3', {}, title), f);
}

function button(label, onclick, props) {
  return el('button', {type: 'button', onclick, ...props}, label);
}

// A button that asks first, then acts (confirm shows the name as plain text).
function dangerButton(label, question, action, done, props, goTo) {
  return button(label, () => {
    if (window.confirm(question)) act(action, done, goTo);
  }, {class: 'danger', ...props});
}

// A part of a view that refresh() fills anew while the rest (forms) stays as typed.
function slot(props) {
  const s = el('div', props);
  s.fill = (...nodes) => {
    s.replaceChildren();
    append(s, nodes);
  };
  return s;
}

// ---- views ----------------------------------------------------------------------------------
// A view is {node, refresh}: refresh runs on entry and every POLL_MS.

const link = (label, ...route) => el('a', {href: '#' + path(...route)}, label);

const exchangeLabel = (name) => name || '(AMQP default)';
// RabbitMQ's API names the default exchange amq.default in paths.
const exchangePath = (name) => name || 'amq.default';

async function vhostNames() {
  return (await get('/vhosts')).map((v) => v.name);
}

function overviewView() {
  const totals = slot();
  const rates = el('canvas', {class: 'chart'});
  const rateNote = slot();
  const queued = el('canvas', {class: 'chart'});
  const listeners = slot();
  const nodes = slot();
  const node = el('section', {}, el('h2', {}, 'Overview'), totals,
    el('h3', {}, 'Nodes'), nodes,
    el('h3', {}, 'Message rates'), rateNote, rates,
    el('h3', {}, 'Queued messages'), queued, el('h3', {}, 'Listeners'), listeners);
  const refresh = async () => {
    const ov = await get('/overview');
    const s = await sample(ov);
    const t = ov.object_totals || {};
    totals.fill(facts([['Node', ov.node], ['Version', `${ov.product_name} ${ov.product_version}`],
      ['Connections', t.connections], ['Channels', t.channels], ['Exchanges', t.exchanges],
      ['Queues', t.queues], ['Consumers', t.consumers],
      ['Messages (ready / unacked)', `${num(s.messages)} (${num(s.ready)} / ${num(s.unacked)})`]]));
    const noRates = RATE_SERIES.every((r) => samples.every((h) => h[r.key] == null));
    rateNote.fill(noRates ? el('p', {class: 'empty'}, 'This server reports no message rates yet.') : '');
    drawChart(rates, RATE_SERIES, '/s');
    drawChart(queued, QUEUED_SERIES, '');
    listeners.fill(table([['Protocol', (l) => l.protocol], ['Port', (l) => l.port, 'num']],
      ov.listeners || []));
    nodes.fill(table(NODE_COLUMNS, await get('/nodes'), {class: 'nodes'}));
  };
  return {node, refresh};
}

const mib = (n) => (typeof n === 'number' ? `${num(Math.round(n / 1048576))} MiB` : '');
// Every node of the cluster: its state, and what a running one says of itself.
const NODE_COLUMNS = [
  ['Name', (n) => n.name],
  ['State', (n) => (n.running ? 'running' : 'down')],
  ['Memory used', (n) => mib(n.mem_used), 'num'],
  ['Disk free', (n) => mib(n.disk_free), 'num'],
  ['Alarms', (n) => [n.mem_alarm && 'memory', n.disk_free_alarm && 'disk'].filter(Boolean).join(', ')],
  ['Uptime', (n) => (typeof n.uptime === 'number' ? `${num(Math.round(n.uptime / 1000))} s` : ''), 'num'],
];

const RATE_SERIES = [
  {key: 'publish', label: 'publish', color: '#c0392b'},
  {key: 'deliver_get', label: 'deliver / get', color: '#2471a3'},
  {key: 'ack', label: 'ack', color: '#229954'},
  {key: 'confirm', label: 'confirm', color: '#b7950b'},
];
const QUEUED_SERIES = [
  {key: 'ready', label: 'ready', color: '#b7950b'},
  {key: 'unacked', label: 'unacked', color: '#2471a3'},
  {key: 'messages', label: 'total', color: '#7d3c98'},
];
const samples = [];

// One chart point: the server's rates when it has them (message_stats.*_details.rate), else
// rates from the counters of two successive polls; queued messages from queue_totals, or
// summed over the queues when the overview has none.
async function sample(ov) {
  const at = Date.now() / 1000;
  const stats = ov.message_stats || {};
  const prev = samples[samples.length - 1];
  const point = {at, counters: {}};
  for (const {key} of RATE_SERIES) {
    const details = stats[key + '_details'];
    const count = stats[key];
    point.counters[key] = count;
    point[key] = null;
    if (details && typeof details.rate === 'number') point[key] = details.rate;
    else if (typeof count === 'number' && prev && typeof prev.counters[key] === 'number') {
      point[key] = Math.max(0, (count - prev.counters[key]) / Math.max(at - prev.at, 0.001));
    }
  }
  Object.assign(point, await queueTotals(ov));
  samples.push(point);
  if (samples.length > HISTORY) samples.shift();
  return point;
}

async function queueTotals(ov) {
  const q = ov.queue_totals;
  if (q && typeof q.messages === 'number') {
    return {messages: q.messages, ready: q.messages_ready, unacked: q.messages_unacknowledged};
  }
  const sum = {messages: 0, ready: 0, unacked: 0};
  for (const x of await get('/queues')) {
    sum.messages += x.messages || 0;
    sum.ready += x.messages_ready || 0;
    sum.unacked += x.messages_unacknowledged || 0;
  }
  return sum;
}

function drawChart(canvas, series, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600;
  const h = canvas.clientHeight || 180;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext('2d');
  ctx.scale(dpr, dpr);
  ctx.font = '11px sans-serif';
  const box = {l: 56, r: 8, t: 22, b: 8};
  const values = samples.flatMap((p) => series.map((s) => p[s.key])).filter((v) => v != null);
  const max = niceMax(Math.max(0, ...values));
  const x = (i) => box.l + ((w - box.l - box.r) * (i + HISTORY - samples.length)) / (HISTORY - 1);
  const y = (v) => h - box.b - ((h - box.t - box.b) * v) / max;
  ctx.strokeStyle = '#ddd';
  ctx.fillStyle = '#666';
  for (const v of [0, max / 2, max]) {
    ctx.beginPath(); ctx.moveTo(box.l, y(v)); ctx.lineTo(w - box.r, y(v)); ctx.stroke();
    ctx.fillText(`${+v.toFixed(2)}${unit}`, 4, y(v) + 4);
  }
  series.forEach((s, n) => {
    ctx.strokeStyle = ctx.fillStyle = s.color;
    ctx.beginPath();
    let drawing = false;
    samples.forEach((p, i) => {
      if (p[s.key] == null) { drawing = false; return; }
      if (drawing) ctx.lineTo(x(i), y(p[s.key])); else ctx.moveTo(x(i), y(p[s.key]));
      drawing = true;
    });
    ctx.stroke();
    const last = samples.length ? samples[samples.length - 1][s.key] : null;
    ctx.fillRect(box.l + n * 130, 6, 10, 10);
    ctx.fillText(`${s.label} ${last == null ? '–' : +last.toFixed(2)}`, box.l + 14 + n * 130, 15);
  });
}

function niceMax(v) {
  if (v <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * step).find((m) => m >= v);
}

function connectionsView() {
  const list = slot();
  const refresh = async () => list.fill(table([
    ['Name', (c) => link(c.name, 'connections', c.name)],
    ['User', (c) => c.user], ['Virtual host', (c) => c.vhost],
    ['Client', (c) => clientName(c.client_properties)],
    ['Protocol', (c) => c.protocol], ['TLS', (c) => (c.ssl ? 'yes' : 'no')],
    ['Channels', (c) => num(c.channels), 'num'],
  ], await get('/connections'), {id: 'connections-table'}));
  return {node: el('section', {}, el('h2', {}, 'Connections'), list), refresh};
}

function clientName(props) {
  const p = props || {};
  return [p.product, p.version].filter((x) => x != null).map(text).join(' ');
}

function connectionView(name) {
  const info = slot();
  const close = dangerButton('Close connection', `Close connection ${name}?`,
    () => api('DELETE', path('connections', name)), 'Connection closed.', {}, '#/connections');
  const refresh = async () => {
    const c = await get(path('connections', name));
    info.fill(facts([['User', c.user], ['Virtual host', c.vhost],
      ['Peer', `${c.peer_host}:${c.peer_port}`], ['Protocol', c.protocol], ['TLS', c.ssl],
      ['Channels', c.channels], ['Frame max', c.frame_max], ['Heartbeat (s)', c.timeout],
      ['Connected at', c.connected_at && new Date(c.connected_at).toISOString()]]),
    el('h3', {}, 'Client properties'), pre(c.client_properties || {}));
  };
  return {node: el('section', {}, el('h2', {}, 'Connection ', name), info, close), refresh};
}

function channelsView() {
  const list = slot();
  const refresh = async () => {
    let rows;
    try {
      rows = await get('/channels');
    } catch (e) {
      if (e.status !== 404) throw e;
      return list.fill(el('p', {class: 'empty'}, 'Channels are not available from this server.'));
    }
    list.fill(table([
      ['Channel', (c) => c.name], ['User', (c) => c.user], ['Virtual host', (c) => c.vhost],
      ['Mode', (c) => [c.confirm && 'confirm', c.transactional && 'tx'].filter(Boolean).join(' ')],
      ['State', (c) => c.state], ['Prefetch', (c) => num(c.prefetch_count), 'num'],
      ['Unacked', (c) => num(c.messages_unacknowledged), 'num'],
      ['Consumers', (c) => num(c.consumer_count), 'num'],
    ], rows, {id: 'channels-table'}));
  };
  return {node: el('section', {}, el('h2', {}, 'Channels'), list), refresh};
}

function exchangesView() {
  const list = slot();
  const refresh = async () => list.fill(table([
    ['Name', (x) => link(exchangeLabel(x.name), 'exchanges', x.vhost, exchangePath(x.name))],
    ['Virtual host', (x) => x.vhost], ['Type', (x) => x.type],
    ['Features', (x) => [x.durable && 'D', x.auto_delete && 'AD', x.internal && 'I']
      .filter(Boolean).join(' ')],
  ], await get('/exchanges'), {id: 'exchanges-table'}));
  return {node: el('section', {}, el('h2', {}, 'Exchanges'), list), refresh};
}

function exchangeView(vhost, name) {
  const info = slot();
  const bindings = slot();
  const remove = dangerButton('Delete exchange', `Delete exchange ${name} in ${vhost}?`,
    () => api('DELETE', path('exchanges', vhost, name)), 'Exchange deleted.', {}, '#/exchanges');
  const refresh = async () => {
    const x = await get(path('exchanges', vhost, name));
    info.fill(facts([['Virtual host', vhost], ['Type', x.type], ['Durable', x.durable],
      ['Auto delete', x.auto_delete], ['Internal', x.internal], ['Arguments', x.arguments]]));
    bindings.fill(bindingTable(await exchangeBindings(vhost, x.name)));
  };
  const node = el('section', {}, el('h2', {}, 'Exchange ', exchangeLabel(name === 'amq.default' ? '' : name)),
    info, el('h3', {}, 'Bindings from this exchange'), bindings,
    publishForm(vhost, name, null), remove);
  return {node, refresh};
}

async function exchangeBindings(vhost, name) {
  try {
    return await get(path('exchanges', vhost, exchangePath(name), 'bindings', 'source'));
  } catch (e) {
    if (e.status !== 404) throw e;
    return (await get(path('bindings', vhost))).filter((b) => b.source === name);
  }
}

function bindingTable(rows) {
  return table([
    ['From', (b) => exchangeLabel(b.source)], ['To', (b) => `${b.destination_type} ${b.destination}`],
    ['Routing key', (b) => b.routing_key], ['Arguments', (b) => text(b.arguments)],
  ], rows);
}

function queuesView() {
  const list = slot();
  const add = form('Add a queue', [
    field('Virtual host', input('vhost', {value: '/', required: true})),
    field('Name', input('name', {required: true})),
    field('Durable', select('durable', [['true', 'yes'], ['false', 'no']], 'true')),
  ], 'Add queue', (f) => act(() => api('PUT', path('queues', f.vhost.value, f.name.value),
    {durable: f.durable.value === 'true', auto_delete: false, arguments: {}}), 'Queue added.'));
  const refresh = async () => list.fill(table([
    ['Name', (q) => link(q.name, 'queues', q.vhost, q.name)],
    ['Virtual host', (q) => q.vhost], ['Type', (q) => q.type], ['State', (q) => q.state],
    ['Ready', (q) => num(q.messages_ready), 'num'],
    ['Unacked', (q) => num(q.messages_unacknowledged), 'num'],
    ['Total', (q) => num(q.messages), 'num'], ['Consumers', (q) => num(q.consumers), 'num'],
  ], await get('/queues'), {id: 'queues-table'}));
  return {node: el('section', {}, el('h2', {}, 'Queues'), list, add), refresh};
}

function queueView(vhost, name) {
  const info = slot({id: 'queue-info'});
  const bindings = slot();
  const purge = dangerButton('Purge messages', `Purge all ready messages of queue ${name}?`,
    () => api('DELETE', path('queues', vhost, name, 'contents')), 'Queue purged.', {id: 'purge'});
  const remove = dangerButton('Delete queue', `Delete queue ${name} in ${vhost}?`,
    () => api('DELETE', path('queues', vhost, name)), 'Queue deleted.', {id: 'delete-queue'},
    '#/queues');
  const refresh = async () => {
    const q = await get(path('queues', vhost, name));
    info.fill(facts([['Virtual host', vhost], ['Type', q.type], ['State', q.state],
      ['Durable', q.durable], ['Auto delete', q.auto_delete], ['Exclusive', q.exclusive],
      ['Arguments', q.arguments], ['Ready', num(q.messages_ready)],
      ['Unacked', num(q.messages_unacknowledged)], ['Total', num(q.messages)],
      ['Consumers', num(q.consumers)]]));
    const all = await get(path('bindings', vhost));
    bindings.fill(bindingTable(all.filter((b) => b.destination_type === 'queue' && b.destination === name)));
  };
  const node = el('section', {id: 'queue-detail'}, el('h2', {}, 'Queue ', name), info,
    el('div', {class: 'actions'}, purge, remove), el('h3', {}, 'Bindings to this queue'), bindings,
    getMessagesForm(vhost, name), publishForm(vhost, 'amq.default', name));
  return {node, refresh};
}

function getMessagesForm(vhost, name) {
  const out = slot({id: 'messages'});
  const box = form('Get messages', [
    field('Ack mode', select('ackmode', [['ack_requeue_true', 'Nack message requeue true'],
      ['reject_requeue_true', 'Reject requeue true'], ['ack_requeue_false', 'Automatic ack'],
      ['reject_requeue_false', 'Reject requeue false']], 'ack_requeue_true')),
    field('Encoding', select('encoding', [['auto', 'Auto string / base64'], ['base64', 'base64']], 'auto')),
    field('Messages', input('count', {type: 'number', min: 1, value: 1})),
  ], 'Get messages', (f) => act(async () => {
    const body = {count: Number(f.count.value) || 1, ackmode: f.ackmode.value,
      encoding: f.encoding.value, truncate: 50000};
    const got = await api('POST', path('queues', vhost, name, 'get'), body);
    out.fill(got.length ? got.map(messageBox) : el('p', {class: 'empty'}, 'Queue is empty.'));
  }));
  box.append(out);
  return box;
}

function messageBox(m, i) {
  return el('div', {class: 'message'}, el('h4', {}, `Message ${i + 1}`),
    facts([['Exchange', exchangeLabel(m.exchange)], ['Routing key', m.routing_key],
      ['Redelivered', m.redelivered], ['Messages left', m.message_count],
      ['Payload', `${num(m.payload_bytes)} bytes, encoding ${m.payload_encoding}`]]),
    el('h5', {}, 'Properties'), pre(m.properties || {}), el('h5', {}, 'Payload'), pre(text(m.payload)));
}

// Publish through `exchange`; to a queue: the default exchange with its name as the key.
function publishForm(vhost, exchange, queue) {
  const controls = [
    queue == null && field('Routing key', input('key')),
    field('Delivery mode', select('mode', [['1', '1 - non-persistent'], ['2', '2 - persistent']], '1')),
    field('Headers (JSON object)', input('headers', {placeholder: '{}'})),
    el('label', {class: 'wide'}, 'Payload', el('textarea', {name: 'payload', rows: 4})),
  ];
  return form('Publish message', controls, 'Publish message', (f) => act(async () => {
    const headers = f.headers.value.trim() ? JSON.parse(f.headers.value) : undefined;
    const body = {properties: {delivery_mode: Number(f.mode.value), headers},
      routing_key: queue == null ? f.key.value : queue, payload: f.payload.value,
      payload_encoding: 'string'};
    const r = await api('POST', path('exchanges', vhost, exchange, 'publish'), body);
    flash(r && r.routed === false ? 'Message published, but not routed.' : 'Message published.', 'ok');
  }));
}

function adminView() {
  const users = slot({id: 'users'});
  const vhosts = slot({id: 'vhosts'});
  const perms = slot({id: 'permissions'});
  const node = el('section', {}, el('h2', {}, 'Users'), users,
    form('Add a user', [field('Name', input('name', {required: true})),
      field('Password', input('password', {type: 'password'})),
      field('Tags', input('tags', {placeholder: 'administrator, monitoring, management'}))],
    'Add user', (f) => act(() => api('PUT', path('users', f.name.value),
      {password: f.password.value, tags: f.tags.value}), 'User saved.')),
    el('h2', {}, 'Virtual hosts'), vhosts,
    form('Add a virtual host', [field('Name', input('name', {required: true}))], 'Add virtual host',
      (f) => act(() => api('PUT', path('vhosts', f.name.value), {}), 'Virtual host added.')),
    el('h2', {}, 'Permissions'), perms,
    form('Set permission', [field('User', input('user', {required: true})),
      field('Virtual host', input('vhost', {value: '/', required: true})),
      field('Configure', input('configure', {value: '.*'})), field('Write', input('write', {value: '.*'})),
      field('Read', input('read', {value: '.*'}))], 'Set permission',
    (f) => act(() => api('PUT', path('permissions', f.vhost.value, f.user.value),
      {configure: f.configure.value, write: f.write.value, read: f.read.value}), 'Permission set.')));
  const refresh = async () => {
    const [u, v, p] = await Promise.all([get('/users'), get('/vhosts'), get('/permissions')]);
    users.fill(table([['Name', (x) => x.name], ['Tags', (x) => (x.tags || []).map(text).join(', ')],
      ['', (x) => dangerButton('Delete', `Delete user ${x.name}?`,
        () => api('DELETE', path('users', x.name)), 'User deleted.')]], u));
    vhosts.fill(table([['Name', (x) => x.name],
      ['', (x) => dangerButton('Delete', `Delete virtual host ${x.name} and everything in it?`,
        () => api('DELETE', path('vhosts', x.name)), 'Virtual host deleted.')]], v));
    perms.fill(table([['User', (x) => x.user], ['Virtual host', (x) => x.vhost],
      ['Configure', (x) => x.configure], ['Write', (x) => x.write], ['Read', (x) => x.read],
      ['', (x) => dangerButton('Clear', `Clear the permissions of ${x.user} in ${x.vhost}?`,
        () => api('DELETE', path('permissions', x.vhost, x.user)), 'Permission cleared.')]], p));
  };
  return {node, refresh};
}

function definitionsView() {
  const exportButton = button('Download definitions', () => act(async () => {
    const defs = await get('/definitions');
    const blob = new Blob([JSON.stringify(defs, null, 2)], {type: 'application/json'});
    const a = el('a', {href: URL.createObjectURL(blob), download: 'tern-definitions.json'});
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 0);
  }, 'Definitions downloaded.'));
  const upload = form('Import definitions', [field('Definitions file (JSON)',
    input('file', {type: 'file', accept: '.json,application/json', required: true}))], 'Upload',
  (f) => act(async () => {
    const body = await f.file.files[0].text();
    JSON.parse(body); // a clear error here rather than the server's
    await api('POST', '/definitions', body);
  }, 'Definitions imported.'));
  const node = el('section', {}, el('h2', {}, 'Definitions'),
    el('div', {class: 'box'}, el('h3', {}, 'Export'),
      el('p', {}, 'Users, virtual hosts, permissions, exchanges, queues and bindings, ' +
        'as RabbitMQ exports them.'),
      exportButton), upload);
  return {node};
}

// ---- routing and login ------------------------------------------------------------------------

const VIEWS = {
  overview: overviewView, connections: (n) => (n == null ? connectionsView() : connectionView(n)),
  channels: channelsView, admin: adminView, definitions: definitionsView,
  exchanges: (v, n) => (n == null ? exchangesView() : exchangeView(v, n)),
  queues: (v, n) => (n == null ? queuesView() : queueView(v, n)),
};

let current = null;
let nextFlash = null; // what the next view shows first: the result of the action that led there

function parseHash() {
  try {
    return location.hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '').map(decodeURIComponent);
  } catch (_) {
    return [];
  }
}

async function route() {
  if (!auth) return;
  const [tab, ...args] = parseHash();
  const name = VIEWS[tab] ? tab : 'overview';
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.tab === name);
  flash(nextFlash || '', nextFlash ? 'ok' : '');
  nextFlash = null;
  current = VIEWS[name](...args);
  $('view').replaceChildren(current.node);
  await refresh();
}

async function refresh() {
  const view = current;
  if (!view || !view.refresh) return;
  try {
    await view.refresh();
  } catch (e) {
    if (view === current) flash(e.message, 'error');
  }
}

function showApp(me) {
  $('login').hidden = true;
  $('app').hidden = false;
  $('user-info').hidden = false;
  $('user-name').textContent = `${me.name} (${(me.tags || []).map(text).join(', ') || 'no tags'})`;
  const node = (ov) => `${ov.product_name} ${ov.product_version} on ${ov.node}`;
  get('/overview').then((ov) => { $('node-info').textContent = node(ov); }, () => {});
  route();
}

function logout(why) {
  auth = null;
  current = null;
  sessionStorage.removeItem(AUTH_KEY);
  $('app').hidden = true;
  $('user-info').hidden = true;
  $('view').replaceChildren();
  $('login').hidden = false;
  $('login-error').textContent = why || '';
  $('login-user').value = sessionStorage.getItem(USER_KEY) || '';
}

async function login(ev) {
  ev.preventDefault();
  const user = $('login-user').value;
  const header = basicAuth(user, $('login-password').value);
  try {
    const me = await request(header, 'GET', '/whoami');
    auth = header;
    sessionStorage.setItem(AUTH_KEY, header);
    sessionStorage.setItem(USER_KEY, user);
    $('login-password').value = '';
    showApp(me);
  } catch (e) {
    $('login-error').textContent = `Login failed: ${e.message}`;
  }
}

function start() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => logout(''));
  window.addEventListener('hashchange', route);
  setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  if (!auth) return logout('');
  request(auth, 'GET', '/whoami').then(showApp, () => logout(''));
}

start();

// turnpike's operator console: one page talking to the operator and admin APIs with the session
// cookie the server set at sign-in. The key typed at sign-in is sent once and never kept: nothing is
// written to localStorage, sessionStorage or a script-readable cookie. Every text from the API is
// put in the page with textContent (never as HTML).

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');
const statusLine = document.getElementById('status');
/** The signed-in principal: `{ kind: 'admin' }` or `{ kind: 'operator', operator }`. */
let me;
/** Charts on the current page, resized with the window; drawn once their element is in the page. */
let charts = [];
let undrawn = [];
/** A timer the current page polls with; cleared when the page changes. */
let poll;

/** An element with attributes (`on…` are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false || value === null) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

class ApiFailure extends Error {}

/** One API call, as JSON, with the session cookie; an API error becomes an ApiFailure with its message. */
async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text };
  }
  if (res.status === 401 && path !== '/console/session') {
    me = undefined;
    showSignIn('Your session ended: sign in again.');
    throw new ApiFailure('signed out');
  }
  if (!res.ok) throw new ApiFailure(data.message ?? `${res.status} ${res.statusText}`);
  return data;
}

function say(message) {
  statusLine.textContent = message;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => (statusLine.textContent = ''), 5000);
}

/** Atomic USDC (or micro-USD) as a USD string, exactly: "1234567" → "1.234567", "10000" → "0.01". */
function usd(atomic) {
  const n = BigInt(atomic ?? 0);
  const sign = n < 0n ? '-' : '';
  const abs = n < 0n ? -n : n;
  const frac = (abs % 1000000n)
    .toString()
    .padStart(6, '0')
    .replace(/0{1,4}$/, '');
  return `${sign}${abs / 1000000n}.${frac.padEnd(2, '0')}`;
}

const when = (iso) => (iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 19) : '');
const stateCell = (state) => h('td', { class: `state-${state}` }, state);

/** A table with a caption; `rows` are arrays of cells (strings, nodes or td elements). */
function table(caption, headers, rows, empty = 'Nothing yet.') {
  if (rows.length === 0) return h('p', { class: 'muted' }, `${caption}: ${empty}`);
  const numeric = headers.map((x) => x.endsWith(' #') || x.endsWith('(USD)'));
  const cls = (i) => (numeric[i] ? 'num' : undefined);
  const cell = (content, i) => (content instanceof HTMLTableCellElement ? content : h('td', { class: cls(i) }, content));
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('caption', { class: 'muted' }, caption),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          headers.map((x, i) => h('th', { scope: 'col', class: cls(i) }, x.replace(/ #$/, ''))),
        ),
      ),
      h(
        'tbody',
        {},
        rows.map((r) => h('tr', {}, r.map(cell))),
      ),
    ),
  );
}

/** A labelled form control; `control` is an input/select/textarea whose id the label names. */
function field(label, control, hint) {
  return h('div', {}, h('label', { for: control.id }, label), control, hint ? h('div', { class: 'muted' }, hint) : undefined);
}

/** A form that runs `action(values)` on submit, says what failed inline, and re-renders on success. */
function form(title, controls, submit, action) {
  const error = h('p', { class: 'error', role: 'alert' });
  const button = h('button', { type: 'submit' }, submit);
  const el = h('form', { class: 'card', 'aria-label': title }, h('h2', {}, title), controls, error, button);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const values = Object.fromEntries([...new FormData(el).entries()].map(([k, v]) => [k, typeof v === 'string' ? v.trim() : v]));
    try {
      await action(values, el);
    } catch (failure) {
      if (failure instanceof ApiFailure && failure.message === 'signed out') return;
      error.textContent = failure.message;
    }
  });
  return el;
}

/** A button that runs an API action, then redraws the page. */
function actionButton(label, run, className = 'secondary') {
  return h(
    'button',
    {
      type: 'button',
      class: className,
      onclick: async () => {
        try {
          await run();
          await route();
        } catch (failure) {
          say(failure.message);
        }
      },
    },
    label,
  );
}

/** Suspend or resume what is at `path` (an operator or a key), by its state now. */
const toggle = (path, state) =>
  state === 'active'
    ? actionButton('Suspend', () => api(`${path}/suspend`, { method: 'POST' }))
    : actionButton('Resume', () => api(`${path}/resume`, { method: 'POST' }));

/** A secret shown once (a new key): in the page only, never stored. */
const secretBox = (what, secret) =>
  h(
    'div',
    { class: 'secret', role: 'alert' },
    h('strong', {}, `${what}: `),
    h('code', { class: 'new-secret' }, secret),
    h('div', {}, 'Copy it now: it is not shown again.'),
  );

// ---------------------------------------------------------------------------------------------
// Servers

const perCallInput = (p) => ({
  default: usd(p.price),
  ...(Object.keys(p.tools ?? {}).length ? { tools: Object.fromEntries(Object.entries(p.tools).map(([k, v]) => [k, usd(v)])) } : {}),
  ...(p.free?.length ? { free: p.free } : {}),
});
/** A plan as the API shows it (atomic units) turned back into what the API takes (USD strings). */
function planInput(plan) {
  if (plan.type === 'per_call') return { type: 'per_call', ...perCallInput(plan), freeCallsPerMonth: plan.freeCallsPerMonth };
  if (plan.type === 'tiered') return { type: 'tiered', tiers: plan.tiers.map((t) => ({ ...t, price: usd(t.price) })), free: plan.free };
  return { type: 'subscription', monthlyUsd: usd(plan.monthly), callsPerMonth: plan.callsPerMonth, overage: perCallInput(plan.overage) };
}

function planSummary(plan) {
  if (plan.type === 'per_call') {
    const tools = Object.entries(plan.tools).map(([k, v]) => `${k} ${usd(v)}`);
    const free = plan.freeCallsPerMonth ? `, ${plan.freeCallsPerMonth} free calls/month` : '';
    return `per call: ${usd(plan.price)} USD${tools.length ? ` (${tools.join(', ')})` : ''}${free}`;
  }
  if (plan.type === 'tiered') return `tiered: ${plan.tiers.map((t) => `${t.upTo ? `≤${t.upTo}` : 'then'} ${usd(t.price)}`).join(', ')}`;
  return `subscription: ${usd(plan.monthly)} USD/month for ${plan.callsPerMonth} calls`;
}

function callerSnippet(mcpUrl, tool) {
  return [
    '// An agent paying per call with a wallet (MCP SDK + x402 client)',
    "import { Client } from '@modelcontextprotocol/sdk/client/index.js';",
    "import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';",
    "import { x402Client } from '@x402/core/client';",
    "import { ExactEvmScheme } from '@x402/evm/exact/client';",
    "import { privateKeyToAccount } from 'viem/accounts';",
    '',
    'const wallet = privateKeyToAccount(process.env.PAYER_KEY);',
    "const client = new Client({ name: 'my-agent', version: '1.0.0' });",
    `await client.connect(new StreamableHTTPClientTransport(new URL('${mcpUrl}')));`,
    `const call = { name: '${tool}', arguments: {} };`,
    'let result = await client.callTool(call);',
    'if (result.structuredContent?.accepts) { // payment required: sign it and call again',
    '  const required = result.structuredContent;',
    '  const scheme = new ExactEvmScheme(wallet);',
    '  const payment = await new x402Client().register(required.accepts[0].network, scheme).createPaymentPayload(required);',
    "  result = await client.callTool({ ...call, _meta: { 'x402/payment': payment } });",
    '}',
    '',
    '# Or with prepaid credits (an API key tp_…), from a shell:',
    `curl -s ${mcpUrl} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\`,
    "  -H 'authorization: Bearer tp_YOUR_KEY' \\",
    `  -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${tool}","arguments":{}}}'`,
  ].join('\n');
}

/** The form for a new server, or for editing `server`. */
function serverForm(server) {
  const id = (name) => `server-${server ? 'edit' : 'new'}-${name}`;
  const input = (name, attrs = {}) => h('input', { id: id(name), name, ...attrs });
  const select = (name, options, value) =>
    h(
      'select',
      { id: id(name), name },
      options.map((o) => h('option', { value: o, selected: o === value }, o)),
    );
  const plan = server ? planInput(server.plan) : { type: 'per_call', default: '0.01' };
  const controls = h(
    'div',
    {},
    server ? undefined : field('Slug (served at /mcp/<slug>)', input('slug', { required: true, autocomplete: 'off' })),
    field('Name', input('name', { required: true, value: server?.name ?? '' })),
    field('Upstream MCP URL', input('upstream', { required: true, type: 'url', value: server?.upstream ?? '' })),
    field(
      'Upstream bearer secret',
      input('secret', { type: 'password', autocomplete: 'off' }),
      server ? 'leave empty to keep what is set' : 'optional: sent upstream as Authorization: Bearer <secret>',
    ),
    h(
      'div',
      { class: 'row' },
      field('Custody', select('custody', ['direct', 'platform'], server?.custody ?? 'direct')),
      field('Challenge', select('challenge', ['tool-result', 'http-402'], server?.challenge ?? 'tool-result')),
    ),
    field('Pay to (direct custody: your address)', input('payTo', { value: server?.payTo ?? me.operator.payoutAddress ?? '' })),
    h(
      'div',
      {},
      h('input', { id: id('public'), name: 'public', type: 'checkbox', checked: server ? server.public : true, value: 'yes' }),
      h('label', { for: id('public'), class: 'inline' }, ' Listed publicly (discovery and /pricing)'),
    ),
    field(
      'Plan (JSON, USD prices)',
      h('textarea', { id: id('plan'), name: 'plan', required: true }, JSON.stringify(plan, null, 2)),
      'per_call {default, tools, free, freeCallsPerMonth}, tiered {tiers: [{upTo, price}], free} or ' +
        'subscription {monthlyUsd, callsPerMonth, overage}',
    ),
  );
  return form(server ? `Edit ${server.slug}` : 'Register a server', controls, server ? 'Save changes' : 'Register', async (v) => {
    let planValue;
    try {
      planValue = JSON.parse(v.plan);
    } catch {
      throw new Error('The plan is not valid JSON.');
    }
    const { name, upstream, custody, challenge } = v;
    const body = { name, upstream, custody, challenge, public: v.public === 'yes', plan: planValue };
    if (v.payTo) body.payTo = v.payTo;
    if (v.secret) body.auth = { mode: 'header', secret: v.secret };
    if (server) await api(`/operator/servers/${encodeURIComponent(server.slug)}`, { method: 'PATCH', body });
    else await api('/operator/servers', { method: 'POST', body: { slug: v.slug, ...body } });
    say(server ? `Saved ${server.slug}.` : `Registered ${v.slug}.`);
    location.hash = '#servers';
    await route();
  });
}

async function serversPage() {
  const none = { endpoints: [] };
  const listed = fetch('/.well-known/mcp-payment').then(
    (r) => (r.ok ? r.json() : none),
    () => none,
  );
  const [{ servers }, discovery] = await Promise.all([api('/operator/servers'), listed]);
  const editing = new URLSearchParams(location.hash.split('?')[1] ?? '').get('edit');
  const toolOf = (url) => discovery.endpoints?.find((e) => e.url === url)?.tools?.find((t) => t.usd !== '0')?.name ?? 'TOOL_NAME';
  const rows = servers.map((s) => {
    const mcpUrl = `${location.origin}${s.path}`;
    return [
      h('td', {}, h('strong', {}, s.name), h('div', { class: 'muted mono' }, s.slug)),
      h('td', {}, h('code', { class: 'mcp-url' }, mcpUrl)),
      planSummary(s.plan),
      stateCell(s.status),
      s.custody,
      s.public ? 'yes' : 'no',
      h(
        'td',
        {},
        h('a', { href: `#servers?edit=${encodeURIComponent(s.slug)}` }, 'Edit'),
        ' ',
        actionButton(s.status === 'active' ? 'Suspend' : 'Resume', async () => {
          const status = s.status === 'active' ? 'suspended' : 'active';
          await api(`/operator/servers/${encodeURIComponent(s.slug)}`, { method: 'PATCH', body: { status } });
          say(`${s.slug} is ${status}.`);
        }),
        actionButton(
          'Remove',
          async () => {
            if (!confirm(`Remove ${s.slug}? It stops being served; its history stays.`)) return;
            await api(`/operator/servers/${encodeURIComponent(s.slug)}`, { method: 'DELETE' });
            say(`Removed ${s.slug}.`);
          },
          'danger',
        ),
        h('details', {}, h('summary', {}, 'Caller snippet'), h('pre', {}, callerSnippet(mcpUrl, toolOf(mcpUrl)))),
      ),
    ];
  });
  const edited = servers.find((s) => s.slug === editing);
  return [
    h('h1', {}, 'Servers'),
    table('Your MCP servers', ['Server', 'MCP URL', 'Plan and prices', 'State', 'Custody', 'Public', 'Actions'], rows, 'none yet.'),
    edited ? serverForm(edited) : serverForm(undefined),
  ];
}

// ---------------------------------------------------------------------------------------------
// Revenue and usage

const DAY = 86400;
const chartWidth = (el) => Math.max(260, el.clientWidth - 16);
function lineChart(title, days, series) {
  const label = `${title} by day (the table below has the figures)`;
  const totals = Object.fromEntries(series.map((s) => [s.key, s.total]));
  const el = h('figure', { class: 'chart', role: 'img', 'aria-label': label, dataset: totals });
  el.append(h('figcaption', {}, title));
  const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  const opts = {
    width: 600,
    height: 220,
    scales: { x: { time: true } },
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: true } }))],
    axes: [{}, { size: 60 }],
  };
  undrawn.push(() => {
    const chart = new window.uPlot({ ...opts, width: chartWidth(el) }, [xs, ...series.map((s) => s.values)], el);
    charts.push({ chart, el });
  });
  return el;
}

/** Every UTC day from `from` to `to`, both included, as YYYY-MM-DD. */
function daysBetween(from, to) {
  const out = [];
  const last = Date.parse(`${to}T00:00:00Z`);
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= last; t += DAY * 1000) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

async function usagePage() {
  const admin = me.kind === 'admin';
  const params = new URLSearchParams(location.hash.split('?')[1] ?? '');
  const query = new URLSearchParams([...params].filter(([k, v]) => ['from', 'to', 'server'].includes(k) && v));
  const base = admin ? '/admin/analytics' : '/operator/analytics';
  const [a, { servers }] = await Promise.all([api(`${base}?${query}`), admin ? { servers: [] } : api('/operator/servers')]);
  const days = daysBetween(a.from, a.to);
  const byDay = new Map(a.byDay.map((r) => [r.key, r]));
  const col = (k, f = Number) => days.map((d) => f(byDay.get(d)?.[k] ?? 0));
  const dollars = (v) => Number(BigInt(v)) / 1e6;
  const totals = a.byDay.reduce(
    (t, r) => ({
      calls: t.calls + r.calls,
      paidCalls: t.paidCalls + r.paidCalls,
      revenue: t.revenue + BigInt(r.revenue),
      operatorShare: t.operatorShare + BigInt(r.operatorShare),
    }),
    { calls: 0, paidCalls: 0, revenue: 0n, operatorShare: 0n },
  );
  const serverOptions = [
    h('option', { value: '' }, 'all'),
    ...servers.map((s) => h('option', { value: s.slug, selected: s.slug === params.get('server') }, s.slug)),
  ];
  const filter = form(
    'Range',
    h(
      'div',
      { class: 'row' },
      field('From (UTC day)', h('input', { id: 'range-from', name: 'from', type: 'date', value: a.from })),
      field('To (UTC day)', h('input', { id: 'range-to', name: 'to', type: 'date', value: a.to })),
      admin ? undefined : field('Server', h('select', { id: 'range-server', name: 'server' }, serverOptions)),
    ),
    'Show',
    async (v) => {
      location.hash = `#usage?${new URLSearchParams(Object.entries(v).filter(([, x]) => x))}`;
    },
  );
  // Callers are long addresses and key ids, set to wrap anywhere; days, tools and rails stay whole.
  const usageRows = (rows, keyClass) =>
    rows.map((r) => [h('td', { class: keyClass }, r.key), String(r.calls), String(r.paidCalls), usd(r.revenue), usd(r.operatorShare)]);
  const usageHeaders = (first) => [first, 'Calls #', 'Paid calls #', 'Revenue (USD)', 'Operator share (USD)'];
  const latency = `p50 ${a.settlement.p50Ms} ms, p99 ${a.settlement.p99Ms} ms (from the charge to its settled transaction)`;
  const csv = `${base}?${new URLSearchParams([...query, ['format', 'csv']])}`;
  return [
    h('h1', {}, admin ? 'Usage and revenue (instance)' : 'Revenue and usage'),
    filter,
    h(
      'p',
      {},
      h('a', { href: csv, download: `turnpike-analytics-${a.from}-${a.to}.csv` }, 'Export CSV'),
      h('span', { class: 'muted' }, ` · ${a.from} to ${a.to}, UTC`),
    ),
    h(
      'div',
      { class: 'grid' },
      [
        ['Calls', String(totals.calls)],
        ['Paid calls', String(totals.paidCalls)],
        ['Revenue (USD)', usd(totals.revenue)],
        ['Operator share (USD)', usd(totals.operatorShare)],
        ['Settlement p50 / p99', a.settlement.count ? `${a.settlement.p50Ms} / ${a.settlement.p99Ms} ms` : '—'],
      ].map(([label, value]) => h('div', { class: 'figure' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value))),
    ),
    lineChart('Calls', days, [
      { key: 'calls', label: 'Calls', color: '#1f5fbf', values: col('calls'), total: String(totals.calls) },
      { key: 'paidCalls', label: 'Paid calls', color: '#1e7b34', values: col('paidCalls'), total: String(totals.paidCalls) },
    ]),
    lineChart('Revenue (USD)', days, [
      { key: 'revenue', label: 'Revenue', color: '#8e44ad', values: col('revenue', dollars), total: usd(totals.revenue) },
      {
        key: 'operatorShare',
        label: 'Operator share',
        color: '#d35400',
        values: col('operatorShare', dollars),
        total: usd(totals.operatorShare),
      },
    ]),
    h('h2', {}, 'By day'),
    table('Usage by day', usageHeaders('Day'), usageRows(a.byDay)),
    h('h2', {}, 'By tool'),
    table('Usage by tool', usageHeaders('Tool'), usageRows(a.byTool)),
    h('h2', {}, 'By rail'),
    table('Usage by rail', usageHeaders('Rail'), usageRows(a.byRail)),
    h('h2', {}, 'Top callers'),
    table('Top callers (API key or payer address)', usageHeaders('Caller'), usageRows(a.topCallers, 'mono')),
    h('h2', {}, 'Denials'),
    table(
      'Refused calls by reason',
      ['Reason', 'Count #'],
      a.denials.map((d) => [d.reason, String(d.count)]),
    ),
    h('h2', {}, 'Settlement latency'),
    h('p', {}, a.settlement.count ? `Settled payments: ${a.settlement.count}; ${latency}.` : 'None in this range.'),
  ];
}

// ---------------------------------------------------------------------------------------------
// Money

const FINAL = new Set(['confirmed', 'failed']);
/** Re-reads the page, but not under someone typing in one of its fields (a redraw would lose what they typed). */
function refreshUnlessTyping() {
  if (['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement?.tagName)) poll = setTimeout(refreshUnlessTyping, 1000);
  else void route();
}
async function moneyPage() {
  const reads = [api('/operator'), api('/operator/withdrawals'), api('/operator/payouts')];
  const [profile, { withdrawals }, { payouts }] = await Promise.all(reads);
  const b = profile.balance;
  const figure = (label, value) =>
    h('div', { class: 'figure' }, h('div', { class: 'label' }, label), h('div', { class: 'value', dataset: { balance: label } }, value));
  if (withdrawals.some((w) => !FINAL.has(w.state))) poll = setTimeout(refreshUnlessTyping, 1000);
  return [
    h('h1', {}, 'Money'),
    h('h2', {}, 'Balances (USD)'),
    h(
      'div',
      { class: 'grid' },
      figure('USDC available', usd(b.usdcAvailable)),
      figure('USDC pending', usd(b.usdcPending)),
      figure('USDC reserved', usd(b.usdcReserved)),
      figure('USDC withdrawn', usd(b.usdcWithdrawn)),
      figure('Fiat available', usd(b.fiatAvailable)),
      figure('Fiat paid out', usd(b.fiatPaidOut)),
      figure('Paid to you directly', usd(b.direct)),
      figure('Invoiced post-paid (not yet collected)', usd(b.invoiced)),
    ),
    form(
      'Payout address',
      field(
        'Your address for USDC withdrawals',
        h('input', { id: 'payout-address', name: 'payoutAddress', value: profile.payoutAddress ?? '', placeholder: '0x…', required: true }),
      ),
      'Save address',
      async (v) => {
        await api('/operator', { method: 'PATCH', body: { payoutAddress: v.payoutAddress } });
        say('Payout address saved.');
        await route();
      },
    ),
    form(
      'Withdraw USDC',
      field(
        'Amount (USD)',
        h('input', { id: 'withdraw-usd', name: 'usd', inputmode: 'decimal', placeholder: `all available (${usd(b.usdcAvailable)})` }),
        `to ${profile.payoutAddress ?? 'your payout address (set it above)'}`,
      ),
      'Withdraw',
      async (v) => {
        const body = { ...(v.usd ? { usd: v.usd } : {}), idempotencyKey: crypto.randomUUID() };
        const w = await api('/operator/withdrawals', { method: 'POST', body });
        say(`Withdrawal of ${usd(w.amount)} USD requested.`);
        await route();
      },
    ),
    h('h2', {}, 'Withdrawals'),
    table(
      'USDC withdrawals, newest first',
      ['Requested', 'Amount (USD)', 'To', 'State', 'Transaction'],
      withdrawals.map((w) => [
        when(w.createdAt),
        usd(w.amount),
        h('td', { class: 'mono' }, w.to),
        stateCell(w.waitingForGas ? `${w.state} (waiting for gas)` : w.state),
        h('td', { class: 'mono tx-hash' }, w.txHash ?? w.error ?? ''),
      ]),
    ),
    h('h2', {}, 'Fiat payouts (Stripe Connect)'),
    h(
      'p',
      {},
      actionButton('Set up payouts (Stripe onboarding)', async () => {
        const link = await api('/operator/payouts/onboarding', { method: 'POST' });
        location.assign(link.url);
      }),
      actionButton('Pay out the fiat balance', async () => {
        await api('/operator/payouts', { method: 'POST', body: { idempotencyKey: crypto.randomUUID() } });
        say('Payout requested.');
      }),
    ),
    table(
      'Payouts, newest first',
      ['Requested', 'Amount (USD)', 'State', 'Transfer'],
      payouts.map((p) => [when(p.createdAt), usd(p.amount), stateCell(p.state), h('td', { class: 'mono' }, p.transferId ?? p.error ?? '')]),
    ),
  ];
}

// ---------------------------------------------------------------------------------------------
// Keys, audit, operators

async function keysPage() {
  const admin = me.kind === 'admin';
  const base = admin ? '/admin/keys' : '/operator/keys';
  const { keys } = await api(base);
  const rows = keys.map((k) => [
    h('td', {}, h('strong', {}, k.name), h('div', { class: 'muted mono' }, k.id)),
    stateCell(k.status),
    usd(k.balance),
    usd(k.spentTotal),
    k.scope?.servers?.join(', ') ?? 'all',
    h(
      'td',
      {},
      k.status === 'revoked'
        ? ''
        : [
            toggle(`${base}/${k.id}`, k.status),
            actionButton(
              'Revoke',
              async () => {
                if (confirm(`Revoke ${k.name}? This is final.`)) await api(`${base}/${k.id}/revoke`, { method: 'POST' });
              },
              'danger',
            ),
          ],
    ),
  ]);
  return [
    h('h1', {}, admin ? 'API keys' : 'API keys for your customers'),
    h(
      'p',
      { class: 'muted' },
      admin
        ? 'Every credits API key on this instance.'
        : 'Keys you make pay on your servers only; they start at zero and are funded by your customers’ own top-ups.',
    ),
    table('API keys', ['Key', 'State', 'Balance (USD)', 'Spent (USD)', 'Servers', 'Actions'], rows),
    form(
      'New API key',
      h(
        'div',
        { class: 'row' },
        field('Name', h('input', { id: 'key-name', name: 'name', required: true })),
        admin ? field('Initial balance (USD)', h('input', { id: 'key-usd', name: 'usd', inputmode: 'decimal' })) : undefined,
      ),
      'Create key',
      async (v) => {
        const key = await api(base, { method: 'POST', body: { name: v.name, ...(v.usd ? { usd: v.usd } : {}) } });
        await route();
        document.getElementById('main').prepend(secretBox(`New key ${key.name}`, key.key));
      },
    ),
  ];
}

async function auditPage() {
  const { entries } = await api(me.kind === 'admin' ? '/admin/audit' : '/operator/audit');
  return [
    h('h1', {}, 'Audit log'),
    table(
      'What was done, newest first',
      ['When', 'Who', 'What', 'On', 'From'],
      entries.map((e) => [when(new Date(e.at).toISOString()), e.actor, e.action, h('td', { class: 'mono' }, e.target ?? ''), e.ip ?? '']),
    ),
  ];
}

async function operatorsPage() {
  const { operators } = await api('/admin/operators');
  return [
    h('h1', {}, 'Operators'),
    table(
      'Operators on this instance',
      ['Operator', 'Email', 'Payout address', 'State', 'Actions'],
      operators.map((o) => [
        h('td', {}, h('strong', {}, o.name), h('div', { class: 'muted mono' }, o.id)),
        o.email,
        h('td', { class: 'mono' }, o.payoutAddress ?? ''),
        stateCell(o.status),
        h('td', {}, toggle(`/admin/operators/${o.id}`, o.status)),
      ]),
    ),
    form(
      'New operator',
      h(
        'div',
        { class: 'row' },
        field('Name', h('input', { id: 'op-name', name: 'name', required: true })),
        field('Email', h('input', { id: 'op-email', name: 'email', type: 'email', required: true })),
      ),
      'Create operator',
      async (v) => {
        const created = await api('/admin/operators', { method: 'POST', body: { name: v.name, email: v.email } });
        await route();
        document.getElementById('main').prepend(secretBox(`Operator key for ${created.name}`, created.key));
      },
    ),
  ];
}

// ---------------------------------------------------------------------------------------------
// Routing, sign-in, sign-out

const PAGES = {
  operator: {
    servers: ['Servers', serversPage],
    usage: ['Revenue and usage', usagePage],
    money: ['Money', moneyPage],
    keys: ['API keys', keysPage],
    audit: ['Audit log', auditPage],
  },
  admin: {
    operators: ['Operators', operatorsPage],
    usage: ['Analytics', usagePage],
    keys: ['API keys', keysPage],
    audit: ['Audit log', auditPage],
  },
};

async function route() {
  clearTimeout(poll);
  if (!me) return showSignIn();
  const pages = PAGES[me.kind];
  const name = location.hash.slice(1).split('?')[0];
  const page = pages[name] ? name : Object.keys(pages)[0];
  const links = Object.entries(pages).map(([id, [title]]) => h('a', { href: `#${id}`, 'aria-current': id === page && 'page' }, title));
  nav.replaceChildren(...links);
  document.title = `${pages[page][0]} · turnpike console`;
  try {
    undrawn = [];
    const content = await pages[page][1]();
    charts = [];
    main.replaceChildren(...[content].flat());
    for (const draw of undrawn) draw();
    main.dataset.page = page;
  } catch (failure) {
    if (failure.message === 'signed out') return;
    main.replaceChildren(h('h1', {}, pages[page][0]), h('p', { class: 'error', role: 'alert' }, failure.message));
  }
}

function showSignIn(notice) {
  nav.replaceChildren();
  who.textContent = '';
  signOutButton.hidden = true;
  main.dataset.page = 'sign-in';
  const key = h('input', { id: 'sign-in-key', name: 'key', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false' });
  const hint = 'Sent once to this server, which answers with a session cookie; the key is not kept in the page.';
  const el = form('Sign in', field('Operator key (op_…) or admin key', key, hint), 'Sign in', async (v, formEl) => {
    key.value = '';
    me = await api('/console/session', { method: 'POST', body: { key: v.key } });
    formEl.reset();
    await signedIn();
  });
  el.classList.add('signin');
  main.replaceChildren(...(notice ? [h('p', { role: 'alert' }, notice)] : []), el);
  key.focus();
}

async function signedIn() {
  who.textContent = me.kind === 'admin' ? 'admin' : `${me.operator.name} (${me.operator.email})`;
  signOutButton.hidden = false;
  await route();
  main.focus();
}

signOutButton.addEventListener('click', async () => {
  await api('/console/session', { method: 'DELETE' }).catch(() => undefined);
  me = undefined;
  clearTimeout(poll);
  statusLine.textContent = '';
  history.replaceState(null, '', location.pathname);
  showSignIn('Signed out.');
});
window.addEventListener('hashchange', () => void route());
window.addEventListener('resize', () => {
  for (const { chart, el } of charts) chart.setSize({ width: chartWidth(el), height: 220 });
});

try {
  me = await api('/console/session');
  await signedIn();
} catch {
  showSignIn();
}

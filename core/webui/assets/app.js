// The celcore web view. It renders one node from the event stream at
// "events" (hello, snapshot, journal) and never polls.
//
// Everything shown is built with createElement and textContent: cell names,
// intent text, journal messages and plugin errors are user input and are
// never parsed as HTML. The page loads nothing but this file and style.css.
'use strict';

(() => {
  const MAX_DECISIONS = 500;
  const SVGNS = 'http://www.w3.org/2000/svg';

  const st = {
    history: 300, // points kept per cell (from hello)
    intervalMs: 1000, // the server's snapshot interval (from hello)
    points: new Map(), // cell -> [[t, replicas, rps, p50, p99, err], ...]
    snap: null, // the last snapshot
    seqs: new Set(), // journal seqs shown
    cells: new Set(), // cell names offered by the filter
    filter: '',
    cards: new Map(), // cell -> {card, intentKey, intentEl}
    keys: new Map(), // section -> the data it was last drawn from
    lastEvent: 0,
    backlogDone: false,
  };

  const $ = (id) => document.getElementById(id);

  // el builds an element: attrs are set as attributes (names are fixed in
  // this file, values may be anything), kids are nodes or text.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') e.className = v;
        else e.setAttribute(k, String(v));
      }
    }
    add(e, kids);
    return e;
  }

  function add(e, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) {
      for (const k of kid) add(e, k);
      return;
    }
    e.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }

  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  function token(s) {
    return String(s || '').toLowerCase().replace(/[^a-z0-9-]/g, '');
  }

  function badge(s, extra) {
    return el('span', { class: 'badge s-' + token(s), title: extra || null }, s || '—');
  }

  // ---- formatting

  function fmtSecs(s) {
    if (s === null || s === undefined || typeof s !== 'number' || !isFinite(s)) return '—';
    if (s === 0) return '0';
    if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + ' ms';
    return s.toFixed(2) + ' s';
  }

  const fmtMs = (ms) => (typeof ms === 'number' ? fmtSecs(ms / 1000) : '—');

  function fmtNum(x, digits) {
    if (typeof x !== 'number' || !isFinite(x)) return x === undefined || x === null ? '—' : String(x);
    if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en');
    return String(+x.toFixed(digits === undefined ? 2 : digits));
  }

  function fmtBytes(n) {
    if (!n) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) {
      n /= 1024;
      i++;
    }
    return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
  }

  function fmtDur(s) {
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + Math.floor(s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd' + Math.floor((s % 86400) / 3600) + 'h';
  }

  // now is the server's time of the last snapshot: relative times do not
  // depend on the browser's clock.
  const now = () => (st.snap ? Date.parse(st.snap.time) : Date.now());

  function fmtAgo(t) {
    if (!t) return '—';
    const d = (now() - Date.parse(t)) / 1000;
    return d < 0 ? 'in ' + fmtDur(-d) : fmtDur(d) + ' ago';
  }

  function fmtClock(t) {
    const d = new Date(t);
    if (isNaN(d)) return '—';
    const p = (n, w) => String(n).padStart(w, '0');
    return p(d.getHours(), 2) + ':' + p(d.getMinutes(), 2) + ':' + p(d.getSeconds(), 2) + '.' + p(d.getMilliseconds(), 3);
  }

  const short = (sha) => (sha ? sha.slice(0, 12) : '—');

  function fmtLabels(l) {
    if (!l) return '';
    const ks = Object.keys(l).sort();
    return ks.length ? '{' + ks.map((k) => k + '=' + l[k]).join(',') + '}' : '';
  }

  // ---- plots: hand-written SVG

  const W = 240;
  const H = 56;

  // plot draws each series ({cls, points: [[t, v]], step}) over the time
  // its points cover (at least a minute, at most `history` intervals),
  // scaled from 0 to the largest value shown (at least floor).
  function plot(title, series, fmt, floor, legend) {
    const end = now();
    let first = end;
    for (const s of series) if (s.points.length && s.points[0][0] < first) first = s.points[0][0];
    const span = Math.min(Math.max(end - first, 60000), Math.max(st.history * st.intervalMs, 60000));
    const start = end - span;
    let max = floor || 0;
    for (const s of series) for (const [t, v] of s.points) if (t >= start && v > max) max = v;
    if (!(max > 0)) max = 1;
    const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
    svg.appendChild(svgEl('line', { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'axis' }));
    for (const s of series) {
      const pts = [];
      let prevY = null;
      for (const [t, v] of s.points) {
        if (t < start) continue;
        const x = (((t - start) / span) * W).toFixed(1);
        const y = (H - 1 - (Math.max(v, 0) / max) * (H - 4)).toFixed(1);
        if (s.step && prevY !== null) pts.push(x + ',' + prevY);
        pts.push(x + ',' + y);
        prevY = y;
      }
      if (pts.length === 1) pts.push((+pts[0].split(',')[0] + 1).toFixed(1) + ',' + prevY);
      if (pts.length) svg.appendChild(svgEl('polyline', { points: pts.join(' '), class: 'line-' + s.cls }));
    }
    const lastVals = series.map((s) => (s.points.length ? s.points[s.points.length - 1][1] : null));
    const head = el('div', { class: 'plot-head' },
      el('span', null, title, legend || null),
      el('span', { class: 'val' }, lastVals.map((v, i) => (i ? ' / ' : '') + fmt(v)).join(''), el('span', { class: 'muted' }, ' max ' + fmt(max))));
    return el('div', { class: 'plot plot-' + token(title) }, head, svg);
  }

  function cellPlots(name) {
    const pts = st.points.get(name) || [];
    const col = (i) => pts.map((p) => [p[0], p[i]]);
    const pct = (v) => (typeof v === 'number' ? fmtNum(v, 1) + ' %' : '—');
    const span = pts.length ? Math.min(Math.max(now() - pts[0][0], 60000), Math.max(st.history * st.intervalMs, 60000)) : 0;
    return el('div', { class: 'plots', title: span ? 'the last ' + fmtDur(span / 1000) + ', a point per telemetry tick' : 'no samples yet' },
      plot('replicas', [{ cls: 'replicas', points: col(1), step: true }], (v) => fmtNum(v, 0), 1),
      plot('rps', [{ cls: 'rps', points: col(2) }], (v) => fmtNum(v, 1), 1),
      plot('latency', [{ cls: 'p50', points: col(3) }, { cls: 'p99', points: col(4) }], fmtSecs, 0.001,
        [' ', el('span', { class: 'key-p50' }, 'p50'), ' / ', el('span', { class: 'key-p99' }, 'p99')]),
      plot('error rate', [{ cls: 'err', points: col(5) }], pct, 1));
  }

  function mergePoints(byCell, replace) {
    if (replace) st.points = new Map();
    for (const [name, pts] of Object.entries(byCell || {})) {
      let arr = st.points.get(name);
      if (!arr) {
        arr = [];
        st.points.set(name, arr);
      }
      for (const p of pts) {
        if (!arr.length || p[0] > arr[arr.length - 1][0]) arr.push(p);
      }
      if (arr.length > st.history) arr.splice(0, arr.length - st.history);
    }
  }

  // ---- sections

  // changed says whether a section's data differs from when it was drawn.
  function changed(section, data) {
    const key = JSON.stringify(data);
    if (st.keys.get(section) === key) return false;
    st.keys.set(section, key);
    return true;
  }

  function table(head, rows, cls) {
    return el('table', { class: cls || null },
      el('thead', null, el('tr', null, head.map((h) => el('th', { class: h.startsWith('#') ? 'num' : null }, h.replace(/^#/, ''))))),
      el('tbody', null, rows));
  }

  function renderHeader(snap) {
    const n = snap.node;
    const name = n.name || 'node';
    $('title').textContent = 'celcore ' + name;
    document.title = 'celcore ' + name;
    const parts = [];
    if (n.version) parts.push(n.version);
    if (n.started) parts.push('up ' + fmtDur((now() - Date.parse(n.started)) / 1000));
    if (n.http) parts.push('http ' + n.http);
    if (n.metrics) parts.push('metrics ' + n.metrics);
    if (snap.fabric && snap.fabric.addr) parts.push('fabric ' + snap.fabric.addr);
    parts.push(snap.cells.length + ' cells');
    parts.push(n.compilations + ' compilations');
    if (n.go) parts.push(n.go);
    if (n.wazero) parts.push('wazero ' + n.wazero);
    $('nodeinfo').textContent = parts.join(' · ');
  }

  function renderFabric(snap) {
    const f = snap.fabric;
    const names = snap.cells.map((c) => c.name);
    if (!changed('fabric', [f, snap.node.name, snap.node.http, names])) return;
    const body = $('fabric-body');
    if (!f) {
      body.replaceChildren(
        el('p', { class: 'muted' }, 'No fabric: this node runs alone.'),
        table(['node', 'state', 'http', 'cells'], [el('tr', { class: 'member', 'data-node': snap.node.name },
          el('td', null, snap.node.name || '—'), el('td', null, badge('alive')), el('td', { class: 'mono' }, snap.node.http),
          el('td', null, names.join(', ') || '—'))]));
      return;
    }
    body.replaceChildren(
      el('p', { class: 'muted' }, 'fabric ' + f.addr + ' · trust domain ' + f.trust_domain + ' · ' + f.nodes.length + ' nodes'),
      table(['node', 'state', 'address', 'http', '#load', 'cells'], f.nodes.map((m) => el('tr', { class: 'member', 'data-node': m.name },
        el('td', null, m.name, m.self ? el('span', { class: 'muted' }, ' (this node)') : null),
        el('td', null, badge(m.state)),
        el('td', { class: 'mono' }, m.address),
        el('td', { class: 'mono' }, m.http || '—'),
        el('td', { class: 'num', title: 'requests in flight and queued' }, String(m.load)),
        el('td', null, (m.cells || []).join(', ') || '—')))));
  }

  function stat(label, ...value) {
    return el('span', null, label + ' ', el('b', null, value));
  }

  function versionsTable(c) {
    const total = c.versions.reduce((a, v) => a + v.weight, 0);
    return table(['version', '#weight', '#replicas', '#requests', '#errors', '#p99'], c.versions.map((v, i) => el('tr', { class: 'version' },
      el('td', { class: 'mono', title: v.sha256 }, short(v.sha256), i === 0 ? el('span', { class: 'muted' }, ' primary') : null),
      el('td', { class: 'num weight' }, total ? Math.round((100 * v.weight) / total) + ' %' : String(v.weight)),
      el('td', { class: 'num' }, String(v.replicas)),
      el('td', { class: 'num' }, String(v.requests)),
      el('td', { class: 'num' }, String(v.errors)),
      el('td', { class: 'num' }, fmtMs(v.p99_ms)))), 'versions');
  }

  function keptState(c) {
    const s = c.snapshot;
    const start = s.init > 0 ? 'snapshot ' + fmtBytes(s.init) : 'initialise' + (s.no_snapshot ? ' (' + s.no_snapshot + ')' : '');
    const parts = [el('span', null, 'replicas start from ', el('b', null, start))];
    if (s.kept) {
      const what = s.id ? [s.id, fmtBytes(s.size), s.how || null, s.taken ? fmtAgo(s.taken) : null].filter(Boolean).join(', ') : 'none captured yet';
      parts.push(el('span', null, ' · kept state ', el('b', { class: 'kept-id' }, what)));
    } else {
      parts.push(el('span', { class: 'muted' }, ' · state not kept'));
    }
    if (s.note) parts.push(el('div', { class: 'warning' }, s.note));
    return el('div', { class: 'kept' }, parts);
  }

  function intentBlock(entry, iv) {
    const key = JSON.stringify([iv.origin, iv.source, iv.text, iv.error, iv.warnings, iv.applied, iv.keep_state, iv.state_every]);
    if (entry.intentKey === key && entry.intentEl) return entry.intentEl;
    const open = entry.intentEl ? entry.intentEl.open : false;
    const from = iv.origin === 'default' ? 'the defaults' : iv.source || iv.origin;
    const d = el('details', { class: 'intent', open: open || null },
      el('summary', null, 'intent from ' + from + ' (' + (iv.parser ? 'parsed by ' + iv.parser : 'in force') + (iv.applied ? ', applied ' + fmtClock(iv.applied) : '') + ')'),
      el('pre', { class: 'intent-text' }, iv.text || ''),
      iv.keep_state ? el('div', { class: 'muted' }, 'keep state' + (iv.state_every ? ' replicated every ' + iv.state_every : '')) : null,
      iv.error ? el('div', { class: 'error intent-error' }, 'rejected (the intent in force stays): ' + iv.error) : null,
      (iv.warnings || []).map((w) => el('div', { class: 'warning' }, w)));
    entry.intentKey = key;
    entry.intentEl = d;
    return d;
  }

  function rulesTable(iv) {
    if (!iv.rules.length) return el('p', { class: 'muted' }, 'No rules.');
    return table(['rule', 'when', 'state', 'last value', 'last fired', 'cooldown'], iv.rules.map((r) => el('tr', { class: 'rule' + (r.holding ? ' rule-holding' : ''), 'data-rule': r.name },
      el('td', { class: 'rule-name', title: r.origin || null }, r.name),
      el('td', { class: 'mono' }, r.text),
      el('td', null, r.holding ? badge('holding', 'since ' + r.since) : el('span', { class: 'muted' }, 'idle'), r.holding && r.since ? ' ' + fmtDur(Math.max(0, now() - Date.parse(r.since)) / 1000) : null),
      el('td', { class: 'num' }, r.last_value === null ? '—' : fmtNum(r.last_value, 4), r.last_seen ? el('div', { class: 'muted' }, fmtAgo(r.last_seen)) : null),
      el('td', null, r.last_fired ? fmtAgo(r.last_fired) : '—'),
      el('td', null, r.quiet_until && Date.parse(r.quiet_until) > now() ? 'quiet ' + fmtAgo(r.quiet_until) : '—'))), 'rules');
  }

  function fillCard(entry, c) {
    const kids = [
      el('header', null,
        el('h3', { class: 'cell-name' }, c.name),
        badge(c.state),
        el('span', { class: 'mono muted', title: c.sha256 }, short(c.sha256)),
        el('span', { class: 'muted' }, c.abi || '')),
      el('div', { class: 'stats' },
        el('span', null, 'replicas ', el('b', { class: 'replicas' }, String(c.replicas)), el('span', { class: 'muted' }, ' (' + c.min + '..' + c.max + ', warm ' + c.warm + ')')),
        stat('in flight', String(c.in_flight)),
        stat('queued', String(c.queued)),
        stat('requests', String(c.requests)),
        stat('errors', String(c.errors)),
        stat('p50', fmtMs(c.p50_ms)),
        stat('p99', fmtMs(c.p99_ms)),
        c.last_used ? stat('last used', fmtAgo(c.last_used)) : null),
      c.error ? el('div', { class: 'error cell-error' }, c.error) : null,
      c.versions.length ? versionsTable(c) : null,
      cellPlots(c.name),
      keptState(c),
    ];
    if (c.intent) {
      kids.push(el('div', { class: 'sub' }, 'reflexes'), rulesTable(c.intent), intentBlock(entry, c.intent));
    }
    entry.card.replaceChildren(...kids.filter(Boolean));
  }

  function renderCells(snap) {
    const body = $('cells-body');
    const names = new Set(snap.cells.map((c) => c.name));
    for (const [name, entry] of st.cards) {
      if (!names.has(name)) {
        entry.card.remove();
        st.cards.delete(name);
        st.points.delete(name);
      }
    }
    let empty = body.querySelector('.empty');
    if (!snap.cells.length) {
      if (!empty) body.appendChild(el('p', { class: 'empty' }, 'No cells: drop a <name>.wasm into the cells directory.'));
      return;
    }
    if (empty) empty.remove();
    let prev = null;
    for (const c of snap.cells) {
      let entry = st.cards.get(c.name);
      if (!entry) {
        entry = { card: el('article', { class: 'cell', 'data-cell': c.name }), intentKey: null, intentEl: null };
        st.cards.set(c.name, entry);
      }
      fillCard(entry, c);
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== entry.card) body.insertBefore(entry.card, want);
      prev = entry.card;
      offerFilter(c.name);
    }
  }

  function renderPlugins(snap) {
    if (!changed('plugins', snap.plugins)) return;
    const body = $('plugins-body');
    if (!snap.plugins.length) {
      body.replaceChildren(el('p', { class: 'empty' }, 'No plugins.'));
      return;
    }
    body.replaceChildren(table(['plugin', 'kind', 'state', '#pid', '#restarts', 'last error', 'version'], snap.plugins.map((p) => el('tr', { class: 'plugin', 'data-plugin': p.name },
      el('td', null, p.name, p.builtin ? el('span', { class: 'muted' }, ' built-in') : null),
      el('td', null, p.kind),
      el('td', null, badge(p.state)),
      el('td', { class: 'num' }, p.pid ? String(p.pid) : '—'),
      el('td', { class: 'num' }, String(p.restarts)),
      el('td', { class: 'msg' }, p.last_error || '—'),
      el('td', { class: 'muted' }, (p.version || '') + (p.api ? ' (api v' + p.api + ')' : ''))))));
  }

  function renderKernel(snap) {
    const k = snap.kernel;
    if (!changed('kernel', k)) return;
    const body = $('kernel-body');
    if (!k.available) {
      body.replaceChildren(el('p', null, badge('no'), ' eBPF is not available' + (k.error ? ': ' + k.error : '') + '. Kernel signals are absent; everything else works.'));
      return;
    }
    const progs = k.programs.length
      ? table(['program', 'object', 'type', 'attached to', '#id'], k.programs.map((p) => el('tr', { class: 'bpf' },
        el('td', { class: 'mono' }, p.name), el('td', { class: 'mono' }, p.object), el('td', null, p.type),
        el('td', { class: 'mono' }, p.attach), el('td', { class: 'num' }, String(p.id)))))
      : el('p', { class: 'muted' }, 'No programs attached.');
    body.replaceChildren(el('p', null, badge('yes'), ' eBPF available · ' + k.programs.length + ' programs attached'), progs);
  }

  // ---- decisions

  function offerFilter(name) {
    if (!name || st.cells.has(name)) return;
    st.cells.add(name);
    const sel = $('decision-filter');
    const opts = Array.from(sel.options).slice(1);
    const next = opts.find((o) => o.value > name) || null;
    sel.insertBefore(el('option', { value: name }, name), next);
  }

  function fmtValue(v) {
    return typeof v === 'number' ? fmtNum(v, 4) : String(v);
  }

  function decisionRow(e, fresh) {
    const verb = [e.verb || '', ...(e.args || [])].join(' ').trim();
    const tr = el('tr', { class: 'decision' + (fresh ? ' fresh' : ''), 'data-seq': e.seq, 'data-cell': e.cell || '' },
      el('td', { class: 'mono', title: e.time || null }, fmtClock(e.time)),
      el('td', { class: 'cell' }, e.cell || ''),
      el('td', { class: 'rule', title: e.origin || null }, e.rule || '', e.condition ? el('div', { class: 'muted mono' }, e.condition) : null),
      el('td', { class: 'values mono' }, (e.values || []).map((v) => el('span', null, v.signal + fmtLabels(v.labels) + ' = ' + fmtValue(v.value)))),
      el('td', { class: 'verb mono' }, verb || '—'),
      el('td', { class: 'outcome' }, badge(e.outcome)),
      el('td', { class: 'num' }, e.duration_ms ? fmtMs(e.duration_ms) : '—'),
      el('td', { class: 'msg' }, e.message || ''),
      el('td', { class: 'muted' }, e.plugin || ''),
      el('td', { class: 'trace mono', title: e.trace_id || null }, e.trace_id ? e.trace_id.slice(0, 12) : ''));
    tr.hidden = st.filter !== '' && e.cell !== st.filter;
    return tr;
  }

  function addEntries(list) {
    const body = $('decision-body');
    const fresh = list.filter((e) => e.seq && !st.seqs.has(e.seq)).sort((a, b) => a.seq - b.seq);
    for (const e of fresh) {
      st.seqs.add(e.seq);
      offerFilter(e.cell);
      const row = decisionRow(e, st.backlogDone);
      // Newest first: before the first row with a lower seq.
      let at = body.firstElementChild;
      while (at && +at.dataset.seq > e.seq) at = at.nextElementSibling;
      body.insertBefore(row, at);
    }
    while (body.rows.length > MAX_DECISIONS) {
      const last = body.lastElementChild;
      st.seqs.delete(+last.dataset.seq);
      last.remove();
    }
    st.backlogDone = true;
    $('decision-empty').hidden = body.rows.length > 0;
  }

  function applyFilter() {
    st.filter = $('decision-filter').value;
    for (const tr of $('decision-body').rows) tr.hidden = st.filter !== '' && tr.dataset.cell !== st.filter;
  }

  // ---- the stream

  function setConn(state, text) {
    const c = $('conn');
    c.className = 'conn conn-' + state;
    c.textContent = text;
  }

  function parse(ev) {
    st.lastEvent = Date.now();
    try {
      return JSON.parse(ev.data);
    } catch (err) {
      console.warn('celcore view: bad event', ev.type, err);
      return null;
    }
  }

  function render(snap) {
    renderHeader(snap);
    renderFabric(snap);
    renderCells(snap);
    renderPlugins(snap);
    renderKernel(snap);
  }

  function connect() {
    const es = new EventSource('events');
    es.onopen = () => setConn('live', 'live');
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setConn('lost', 'disconnected: reload to retry');
      } else {
        setConn('wait', 'reconnecting');
      }
    };
    es.addEventListener('hello', (ev) => {
      const h = parse(ev);
      if (!h) return;
      st.history = h.history || st.history;
      st.intervalMs = h.interval_ms || st.intervalMs;
      mergePoints(h.points, true);
      setConn('live', 'live');
    });
    es.addEventListener('snapshot', (ev) => {
      const s = parse(ev);
      if (!s) return;
      st.snap = s;
      mergePoints(s.points, false);
      render(s);
    });
    es.addEventListener('journal', (ev) => {
      const es2 = parse(ev);
      if (Array.isArray(es2)) addEntries(es2);
    });
    // A stream that went quiet (no snapshot for several intervals) is
    // shown as such; EventSource reconnects by itself when it breaks.
    setInterval(() => {
      if (st.lastEvent && Date.now() - st.lastEvent > 3 * st.intervalMs + 2000 && es.readyState === EventSource.OPEN) {
        setConn('wait', 'no news for ' + fmtDur((Date.now() - st.lastEvent) / 1000));
      }
    }, 1000);
  }

  $('decision-filter').addEventListener('change', applyFilter);
  connect();
})();

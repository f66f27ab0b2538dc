// rota dashboard: vanilla JS, no dependencies. Reads /api/v1/dashboard, then follows
// /api/v1/stream (SSE read with fetch so the Authorization header can be sent).
'use strict';
(function () {
  const TOKEN_KEY = 'rota.token';
  const $ = (id) => document.getElementById(id);
  // snap: last snapshot rendered, at: performance.now() when it arrived, ctrl: the stream's
  // AbortController, actAs: node id -> act-as choice, nextCells: [td, next_fire_ms] to count down.
  const S = { snap: null, at: 0, connected: false, ctrl: null, backoff: 500, retryTimer: 0, retryAt: 0,
    actAs: Object.create(null), charts: '', nextCells: [] };

  // ---------- helpers ----------
  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  const esc = (v) => (v == null ? '' : String(v).replace(/[&<>"']/g, (c) => ESC[c]));
  const pad = (n) => (n < 10 ? '0' : '') + n;
  function clock(ms) {
    if (ms == null || !isFinite(ms)) return '—';
    const d = new Date(ms);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function hhmm(ms) { const d = new Date(ms); return pad(d.getHours()) + ':' + pad(d.getMinutes()); }
  function full(ms) { return ms == null ? '' : new Date(ms).toLocaleString(); }
  function dur(ms) {
    if (ms == null || !isFinite(ms)) return '—';
    ms = Math.max(0, ms);
    if (ms < 1000) return Math.round(ms) + ' ms';
    let s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + 'm ' + s + 's';
    let h = Math.floor(m / 60); m %= 60;
    if (h < 24) return h + 'h ' + m + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }
  function ms2(v) { // compact milliseconds for axes and lateness
    if (v == null) return '—';
    return v < 1000 ? Math.round(v) + ' ms' : (v / 1000).toFixed(v < 10000 ? 1 : 0) + ' s';
  }
  const ago = (ms, now) => (ms == null ? '—' : dur(now - ms) + ' ago');
  const plural = (n, w) => n + ' ' + w + (n === 1 ? '' : 's');
  function storeNow() { // store time now, extrapolated with the browser's clock since the snapshot
    return S.snap ? S.snap.now_ms + (performance.now() - S.at) : Date.now();
  }
  function inText(delta) {
    if (delta > 0) return 'in ' + dur(Math.ceil(delta / 1000) * 1000);
    return delta > -5000 ? 'due' : 'overdue ' + dur(-delta);
  }
  function safe(fn, arg) { try { fn(arg); } catch (e) { console.error('dashboard render:', e); } }

  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = token();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }
  async function errorOf(res) {
    let msg = '';
    try { const j = await res.json(); msg = j && j.error ? String(j.error) : ''; } catch (e) { /* not JSON */ }
    return (msg || res.statusText || 'request failed') + ' (HTTP ' + res.status + ')';
  }
  const isAuth = (status) => status === 401 || status === 403;

  // ---------- keyed tbody patching: keeps untouched rows (and their focus / open selects) ----------
  const tpl = document.createElement('template');
  // rows: [{key, html, fill?(el)}]; html must be exactly one <tr>.
  function patch(tbody, rows) {
    const cache = tbody._cache || (tbody._cache = new Map());
    const active = document.activeElement;
    let focusKey = null, focusSel = null;
    if (active && tbody.contains(active)) {
      const tr = active.closest('tr');
      focusKey = tr && tr._key;
      focusSel = active.tagName === 'SELECT' ? 'select'
        : active.dataset.action ? 'button[data-action="' + active.dataset.action + '"]' : null;
    }
    const fresh = [];
    const els = new Array(rows.length);
    const used = new Set();
    rows.forEach((r, i) => {
      const old = cache.get(r.key);
      if (old && old._html === r.html && !used.has(old)) { els[i] = old; used.add(old); } else fresh.push(i);
    });
    if (fresh.length) {
      tpl.innerHTML = fresh.map((i) => rows[i].html).join('');
      const made = tpl.content.children;
      const list = Array.prototype.slice.call(made);
      fresh.forEach((i, j) => { const el = list[j]; el._html = rows[i].html; el._key = rows[i].key; els[i] = el; });
    }
    const next = new Map();
    rows.forEach((r, i) => next.set(r.key, els[i]));
    const churn = fresh.length + (cache.size - (rows.length - fresh.length));
    if (churn > 64 && focusKey == null) {
      // Many rows come and go (a filter, the first render): swapping them all at once is cheaper.
      const frag = document.createDocumentFragment();
      for (const el of els) frag.appendChild(el);
      tbody.textContent = '';
      tbody.appendChild(frag);
    } else {
      let cur = tbody.firstChild;
      for (const el of els) { if (el === cur) cur = cur.nextSibling; else tbody.insertBefore(el, cur); }
      while (cur) { const n = cur.nextSibling; tbody.removeChild(cur); cur = n; }
    }
    rows.forEach((r, i) => { if (r.fill) r.fill(els[i]); });
    tbody._cache = next;
    if (focusKey != null && focusSel && document.activeElement !== active) {
      const row = next.get(focusKey);
      const el = row && (row.querySelector(focusSel) || row.querySelector('button:not([disabled]), select'));
      if (el) el.focus({ preventScroll: true });
    }
  }
  function setText(el, text, cls) {
    if (el.textContent !== text) el.textContent = text;
    if (cls != null && el.className !== cls) el.className = cls;
  }

  // ---------- header & cards ----------
  function renderHeader(s) {
    setText($('cluster'), s.cluster || '—');
    document.title = (s.cluster ? s.cluster + ' · ' : '') + 'rota dashboard';
    setText($('store'), s.store || '—');
    const l = s.leader;
    $('leader').innerHTML = l ? esc(l.node) + ' <span class="muted">epoch ' + esc(l.epoch) + '</span>'
      : '<span class="bad-text">none</span>';
    setText($('answered'), s.answered_by || '—');
    const w = s.window;
    setText($('window-note'), w ? 'last ' + (w.fires != null ? w.fires + ' fires' : '') + (w.since_ms ? ' since ' + clock(w.since_ms) : '') : '');
    tickUpdated();
  }
  function tickUpdated() {
    if (!S.snap) return;
    const age = performance.now() - S.at;
    setText($('updated'), clock(S.snap.now_ms) + (age >= 2000 ? ' (' + dur(age) + ' ago)' : ''),
      age > 20000 ? 'stale' : '');
  }
  function card(label, value, sub, cls) {
    return '<div class="card ' + (cls || '') + '"><div class="label">' + esc(label) + '</div><div class="value">' +
      esc(value) + '</div><div class="sub">' + (sub || '') + '</div></div>';
  }
  function failureCounts(tasks) {
    let ok = 0, bad = 0, mis = 0;
    for (const t of tasks) {
      const c = t.counts || {};
      ok += c.ok || 0; bad += (c.failed || 0) + (c.timed_out || 0) + (c.abandoned || 0); mis += c.misfired || 0;
    }
    return { ok, bad, mis };
  }
  function renderCards(s) {
    const nodes = s.nodes || [], tasks = s.tasks || [];
    const alive = nodes.filter((n) => n.state === 'alive').length;
    const leaving = nodes.filter((n) => n.state === 'leaving').length;
    const gone = nodes.length - alive - leaving;
    const by = (st) => tasks.filter((t) => t.state === st).length;
    const placed = by('placed') + by('everywhere'), paused = by('paused'), unplaced = by('unplaced');
    const services = tasks.filter((t) => t.kind === 'service').length;
    const fo = (s.charts && s.charts.failovers) || [];
    let last = fo.length ? fo[fo.length - 1] : null;
    if (!last) last = (s.events || []).find((e) => e.kind === 'failover') || null;
    const f = failureCounts(tasks), runs = f.ok + f.bad;
    const rate = runs ? (100 * f.bad) / runs : null;
    const w = s.window || {};
    let h = '';
    h += card('Live nodes', alive + leaving, esc(alive + ' alive · ' + leaving + ' leaving · ' + gone + ' gone'), leaving ? 'warn' : 'good');
    h += card('Placed', placed, esc('of ' + tasks.length + ' (' + plural(services, 'service') + ')'), '');
    h += card('Paused', paused, paused ? 'by command' : '&nbsp;', paused ? 'info' : '');
    h += card('Unplaced', unplaced, unplaced ? 'no eligible node' : '&nbsp;', unplaced ? 'bad' : '');
    h += card('Last failover', last ? dur(last.duration_ms) : '—',
      last ? esc((last.from || '?') + ' · ' + ago(last.at_ms, s.now_ms)) : 'none recorded', last ? 'warn' : '');
    h += card('Failure rate', rate == null ? '—' : (rate < 10 ? rate.toFixed(1) : Math.round(rate)) + '%',
      esc(f.bad + ' of ' + runs + ' runs' + (f.mis ? ' · ' + plural(f.mis, 'misfire') : '')),
      rate == null ? '' : rate >= 10 ? 'bad' : rate > 0 ? 'warn' : 'good');
    const el = $('cards');
    if (el._html !== h) { el.innerHTML = h; el._html = h; }
  }

  // ---------- nodes ----------
  const LIVE = (n) => n.state === 'alive' || n.state === 'leaving';
  function renderNodes(s) {
    const nodes = s.nodes || [];
    const ids = nodes.map((n) => n.id);
    const rows = nodes.filter(LIVE).map((n) => {
      const others = ids.filter((i) => i !== n.id);
      let choice = S.actAs[n.id];
      if (others.indexOf(choice) < 0) choice = others.indexOf(n.acting_as) >= 0 ? n.acting_as : others[0];
      const opts = others.map((o) => '<option value="' + esc(o) + '"' + (o === choice ? ' selected' : '') + '>' + esc(o) + '</option>').join('');
      const owned = n.owned || [];
      const st = esc(n.state);
      const html = '<tr data-node="' + esc(n.id) + '" data-state="' + st + '">' +
        '<th scope="row"><span class="id">' + esc(n.id) + '</span>' + (n.leader ? ' <span class="badge leader">leader</span>' : '') +
        (n.host ? '<div class="sub">' + esc(n.host) + '</div>' : '') + '</th>' +
        '<td><span class="pill s-' + st + '">' + st + '</span></td>' +
        '<td class="num">' + esc(n.incarnation) + '</td>' +
        '<td class="dyn"></td>' +
        '<td>' + (n.acting_as ? '<span class="badge acting">' + esc(n.acting_as) + '</span>' : '<span class="muted">—</span>') + '</td>' +
        '<td>' + (n.drained ? '<span class="pill s-drained">drained</span>' : '<span class="muted">no</span>') + '</td>' +
        '<td class="num" title="' + esc(owned.join(', ')) + '">' + owned.length + '</td>' +
        '<td class="num dyn"></td>' +
        '<td>' + (n.log_level ? esc(n.log_level) : '<span class="muted">—</span>') + '</td>' +
        '<td class="actions"><div class="acts">' +
        (n.drained ? '<button type="button" data-action="undrain">Undrain</button>'
          : '<button type="button" data-action="drain">Drain</button>') +
        '<span class="actas"><select data-act-as="' + esc(n.id) + '" aria-label="node for ' + esc(n.id) + ' to act as"' +
        (others.length ? '' : ' disabled') + '>' + opts + '</select>' +
        '<button type="button" data-action="act-as"' + (others.length ? '' : ' disabled') + '>Act as</button></span>' +
        (n.acting_as ? '<button type="button" data-action="stop-acting">Stop acting</button>' : '') +
        '</div></td></tr>';
      const hb = n.heartbeat_age_ms;
      return {
        key: n.id, html,
        fill: (el) => {
          const d = el.querySelectorAll('td.dyn');
          setText(d[0], n.uptime_ms == null ? '—' : dur(n.uptime_ms));
          setText(d[1], hb == null ? '—' : dur(hb), 'num dyn' + (hb > 15000 ? ' bad-text' : hb > 5000 ? ' warn-text' : ''));
        },
      };
    });
    patch($('nodes').tBodies[0], rows);
    const gone = nodes.filter((n) => !LIVE(n)).map((n) =>
      '<li data-gone-node="' + esc(n.id) + '"><span class="pill s-' + esc(n.state) + '">' + esc(n.state) + '</span> ' +
      '<b>' + esc(n.id) + '</b> <span class="muted">inc ' + esc(n.incarnation) +
      (n.heartbeat_age_ms != null ? ' · last heartbeat ' + esc(dur(n.heartbeat_age_ms)) + ' ago' : '') +
      (n.owned && n.owned.length ? ' · still owns ' + n.owned.length : '') + '</span></li>').join('');
    const g = $('gone');
    if (g._html !== gone) { g.innerHTML = gone; g._html = gone; }
  }

  // ---------- tasks ----------
  const FAILS = ['failed', 'timed_out', 'abandoned'];
  function failing(t) {
    const c = t.counts || {};
    return FAILS.some((k) => c[k] > 0) || (t.last && t.last[0] && FAILS.indexOf(t.last[0].outcome) >= 0);
  }
  function dotTitle(r) {
    let s = String(r.outcome).replace('_', ' ') + ' · ' + clock(r.instant_ms) + (r.node ? ' on ' + r.node : '');
    if (r.attempt > 1) s += ' · attempt ' + r.attempt;
    if (r.started_at_ms != null && r.finished_at_ms != null) s += ' · ' + dur(r.finished_at_ms - r.started_at_ms);
    if (r.message) s += '\n' + r.message;
    return s;
  }
  function taskRow(t) {
    const owner = t.owner ? t.owner.node : '';
    const st = esc(t.state);
    const svc = t.kind === 'service';
    const c = t.counts || {};
    const fails = FAILS.reduce((a, k) => a + (c[k] || 0), 0);
    const per = t.per_node || [];
    let ownerHtml;
    if (t.owner) ownerHtml = esc(owner) + ' <span class="muted">#' + esc(t.owner.incarnation) + '</span>';
    else if (per.length) ownerHtml = '<span title="' + esc(per.map((p) => p.node + ' (token ' + p.token + ')').join('\n')) + '">' + plural(per.length, 'node') + '</span>';
    else ownerHtml = '<span class="muted">—</span>';
    // A fire whose work started opens its output.
    const dots = (t.last || []).map((r) => (r.started_at_ms != null && !svc
      ? '<button type="button" class="dot o-' + esc(r.outcome) + '" data-output="' + esc(r.instant_ms) + '" title="' + esc(dotTitle(r) + '\n(click: output)') + '"></button>'
      : '<span class="dot o-' + esc(r.outcome) + '" title="' + esc(dotTitle(r)) + '"></span>')).join('');
    let reason = '';
    if (t.reason && (t.state === 'unplaced' || t.state === 'paused' || (t.paused_on && t.paused_on.length))) reason = '<div class="reason r-' + st + '">' + esc(t.reason) + '</div>';
    else if (t.state === 'unplaced' || t.state === 'paused') reason = '<div class="reason r-' + st + '">' + st + '</div>';
    if (t.paused_on && t.paused_on.length && t.state !== 'paused') reason += '<div class="reason r-paused">paused on ' + esc(t.paused_on.join(', ')) + '</div>';
    let act;
    const pausedSomewhere = t.state === 'paused' || (t.paused_on && t.paused_on.length);
    if (svc) {
      act = (t.state !== 'paused' ? '<button type="button" data-action="stop">Stop</button>' : '') +
        (pausedSomewhere ? '<button type="button" data-action="start">Start</button>' : '');
    } else {
      act = (t.state !== 'paused' ? '<button type="button" data-action="pause">Pause</button>' : '') +
        (pausedSomewhere ? '<button type="button" data-action="resume">Resume</button>' : '');
    }
    const countsTitle = Object.keys(c).map((k) => k + ': ' + c[k]).join('\n');
    const html = '<tr data-task="' + esc(t.name) + '" data-owner="' + esc(owner) + '" data-state="' + st + '" class="t-' + st + '">' +
      '<th scope="row">' + esc(t.name) + '</th>' +
      '<td><span class="kind k-' + esc(t.kind) + '">' + esc(t.kind) + '</span></td>' +
      '<td class="sched">' + esc(t.schedule) + '</td>' +
      '<td><span class="pill s-' + st + '">' + st + '</span></td>' +
      '<td>' + ownerHtml + '</td>' +
      '<td class="num">' + (t.token == null ? '<span class="muted">—</span>' : esc(t.token)) + '</td>' +
      '<td class="next"></td>' +
      '<td class="dots">' + (dots || '<span class="muted">—</span>') + '</td>' +
      '<td class="num ok-text" title="' + esc(countsTitle) + '">' + esc(c.ok || 0) + '</td>' +
      '<td class="num' + (fails ? ' bad-text' : '') + '" title="' + esc(countsTitle) + '">' + esc(fails) + '</td>' +
      '<td>' + reason + '</td>' +
      '<td class="actions"><div class="acts">' + act + '</div></td></tr>';
    const nf = t.next_fire_ms;
    return {
      key: t.name, html,
      fill: (el) => {
        const td = el.cells[6];
        S.nextCells.push([td, nf]);
        setText(td, nf == null ? '—' : inText(nf - storeNow()));
      },
    };
  }
  function renderTasks() {
    const s = S.snap;
    if (!s) return;
    const tasks = s.tasks || [];
    const q = $('task-filter').value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const want = $('task-state').value;
    const shown = tasks.filter((t) => {
      if (want === 'failing' ? !failing(t) : want && t.state !== want) return false;
      if (!q.length) return true;
      const hay = [t.name, t.kind, t.state, t.schedule, t.owner && t.owner.node, t.reason].join(' ').toLowerCase();
      return q.every((w) => hay.indexOf(w) >= 0);
    });
    S.nextCells = [];
    patch($('tasks').tBodies[0], shown.map(taskRow));
    setText($('task-count'), shown.length === tasks.length ? plural(tasks.length, 'item') : shown.length + ' of ' + tasks.length);
  }
  function tickNext() {
    if (document.hidden) return;
    const now = storeNow();
    for (const [td, nf] of S.nextCells) if (nf != null) setText(td, inText(nf - now));
  }

  // ---------- commands ----------
  function opText(c) {
    const op = String(c.op || '?').replace(/_/g, '-');
    const arg = c.task || c.service || c.node || c.level;
    if (arg) return op + ' ' + arg;
    return scopeOf(c) === 'nodes' && c.targets && c.targets.length ? op + ' ' + c.targets.join(', ') : op;
  }
  function scopeOf(c) {
    if (typeof c.scope === 'string') return c.scope;
    if (c.scope && typeof c.scope === 'object') return Object.keys(c.scope)[0] || '';
    return '';
  }
  function renderCommands(s) {
    const rows = (s.commands || []).map((c) => {
      const chips = (c.nodes || []).map((n) => '<span class="chip a-' + esc(n.state) + '" title="' +
        esc(n.state.replace('_', ' ') + (n.at_ms != null ? ' at ' + clock(n.at_ms) : '') + (n.message ? ': ' + n.message : '')) + '">' +
        esc(n.node) + ' <small>' + esc(n.state.replace('_', ' ')) + '</small></span>').join('');
      const sum = c.summary || {};
      const total = (c.nodes || []).length;
      const status = c.failed ? '<span class="bad-text">failed</span>'
        : c.done ? '<span class="ok-text">done</span>'
        : '<span class="warn-text">' + (sum.applied || 0) + '/' + total + '</span>';
      const scope = scopeOf(c);
      const html = '<tr data-seq="' + esc(c.seq) + '" class="' + (c.failed ? 'c-failed' : c.done ? 'c-done' : 'c-open') + '">' +
        '<th scope="row">#' + esc(c.seq) + '</th>' +
        '<td title="' + esc(full(c.issued_at_ms)) + '">' + clock(c.issued_at_ms) + '</td>' +
        '<td><b>' + esc(opText(c)) + '</b>' + (c.issued_by ? '<div class="sub">by ' + esc(c.issued_by) + (c.requested_by ? ', token ' + esc(c.requested_by) : '') + '</div>' : '') + '</td>' +
        '<td title="' + esc((c.targets || []).join(', ')) + '">' + (scope === 'cluster' ? 'cluster <span class="muted">(' + plural((c.targets || []).length, 'node') + ')</span>'
          : esc((c.targets || []).join(', ') || scope)) + '</td>' +
        '<td class="chips">' + (chips || '<span class="muted">—</span>') + '</td>' +
        '<td>' + status + '</td></tr>';
      return { key: String(c.seq), html };
    });
    patch($('commands').tBodies[0], rows);
  }

  // ---------- events ----------
  function eventText(e) {
    switch (e.kind) {
      case 'node_joined': return e.node + ' joined (inc ' + e.incarnation + (e.host ? ', host ' + e.host : '') + ')';
      case 'node_left': return e.node + ' left (inc ' + e.incarnation + ')';
      case 'node_died': return e.node + ' died (inc ' + e.incarnation + ')';
      case 'failover': {
        const n = (e.tasks || []).length;
        return 'failover: ' + e.from + "'s " + plural(n, 'task') + ' moved in ' + dur(e.duration_ms);
      }
      case 'leader_changed': return e.node + ' became leader (epoch ' + e.epoch + ')' + (e.previous ? ', after ' + e.previous : '');
      case 'fire': {
        const o = e.outcome === 'misfired' ? 'misfire' : String(e.outcome || '').replace('_', ' ');
        return o + ': ' + e.task + ' at ' + clock(e.instant_ms) + (e.node ? ' on ' + e.node : '') + (e.message ? ' — ' + e.message : '');
      }
      case 'fire_retry': return e.task + ' at ' + clock(e.instant_ms) + ' failed; attempt ' + e.attempt + ' at ' + clock(e.retry_at_ms) + (e.node ? ' on ' + e.node : '');
      case 'command_issued': return 'command #' + e.seq + ' issued: ' + String(e.op || '').replace(/_/g, '-') +
        (e.targets && e.targets.length ? ' → ' + e.targets.join(', ') : '') + (e.issued_by ? ' (by ' + e.issued_by + (e.requested_by ? ', token ' + e.requested_by : '') + ')' : '');
      case 'command_acknowledged': return 'command #' + e.seq + ' ' + String(e.state || '').replace('_', ' ') + ' on ' + e.node + (e.message ? ': ' + e.message : '');
      default: {
        const o = Object.assign({}, e); delete o.at_ms; delete o.kind;
        return e.kind + ' ' + JSON.stringify(o);
      }
    }
  }
  function eventTitle(e) {
    if (e.kind === 'failover' && e.tasks) return e.tasks.map((t) => t.task + ' → ' + t.to).join('\n');
    return full(e.at_ms);
  }
  const KIND = { node_joined: 'joined', node_left: 'left', node_died: 'died', leader_changed: 'leader', fire_retry: 'retry', command_issued: 'command', command_acknowledged: 'ack' };
  function renderEvents(s) {
    const h = (s.events || []).map((e) => {
      const k = esc(e.kind);
      return '<li data-kind="' + k + '" class="ev ev-' + k + (e.outcome || e.state ? ' eo-' + esc(e.outcome || e.state) : '') + '" title="' + esc(eventTitle(e)) + '">' +
        '<time>' + clock(e.at_ms) + '</time><span class="ek">' + esc(KIND[e.kind] || String(e.kind).replace(/_/g, ' ')) + '</span><span class="et">' + esc(eventText(e)) + '</span></li>';
    }).join('');
    const el = $('events');
    if (el._html !== h) { el.innerHTML = h || '<li class="muted empty">no events</li>'; el._html = h; }
  }

  // ---------- charts (inline SVG) ----------
  const W = 320, H = 130, L = 40, R = 8, T = 10, B = 20;
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    const f = v / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }
  function svgOpen(label) { return '<svg viewBox="0 0 ' + W + ' ' + H + '" role="img" aria-label="' + esc(label) + '">'; }
  function nodata(el, label) { el.innerHTML = svgOpen(label + ': no data') + '<text class="nodata" x="' + W / 2 + '" y="' + H / 2 + '" text-anchor="middle">no data</text></svg>'; }
  // series: [{values, cls, type:'bar'|'line', titles}]; xl: [first, last] labels
  function chart(el, label, n, series, max, fmt, xl) {
    const pw = W - L - R, ph = H - T - B, bw = pw / Math.max(n, 1);
    const y = (v) => T + ph - (Math.min(v, max) / max) * ph;
    const ln = (c, y1) => '<line class="' + c + '" x1="' + L + '" y1="' + y1 + '" x2="' + (W - R) + '" y2="' + y1 + '"/>';
    const tx = (x, y, a, t) => '<text class="tick" x="' + x + '" y="' + y + '"' + (a ? ' text-anchor="end"' : '') + '>' + esc(t) + '</text>';
    let h = svgOpen(label) + ln('axis', T + ph) + ln('grid', T) + ln('grid', T + ph / 2) +
      tx(L - 4, T + 4, 1, fmt(max)) + tx(L - 4, T + ph + 3, 1, '0');
    if (xl) h += tx(L, H - 5, 0, xl[0]) + tx(W - R, H - 5, 1, xl[1]);
    for (const s of series) {
      if (s.type === 'bar') {
        s.values.forEach((v, i) => {
          if (v == null) return;
          const top = y(v), x = L + i * bw + Math.min(1, bw * 0.15);
          h += '<rect class="' + s.cls + '" x="' + x.toFixed(1) + '" y="' + top.toFixed(1) + '" width="' + Math.max(1, bw - 2 * Math.min(1, bw * 0.15)).toFixed(1) +
            '" height="' + Math.max(v > 0 ? 1 : 0, T + ph - top).toFixed(1) + '"><title>' + esc(s.titles[i]) + '</title></rect>';
        });
      } else {
        let seg = [];
        const flush = () => { if (seg.length > 1) h += '<polyline class="' + s.cls + '" points="' + seg.join(' ') + '"/>'; seg = []; };
        s.values.forEach((v, i) => {
          if (v == null) { flush(); return; }
          const cx = (L + (i + 0.5) * bw).toFixed(1), cy = y(v).toFixed(1);
          seg.push(cx + ',' + cy);
          h += '<circle class="' + s.cls + '" cx="' + cx + '" cy="' + cy + '" r="1.8"><title>' + esc(s.titles[i]) + '</title></circle>';
        });
        flush();
      }
    }
    el.innerHTML = h + '</svg>';
  }
  function renderCharts(s) {
    const c = s.charts || {};
    const key = JSON.stringify(c);
    if (key === S.charts) return;
    S.charts = key;
    const m = c.minutes || [];
    const xl = m.length ? [hhmm(m[0].at_ms), hhmm(m[m.length - 1].at_ms)] : null;
    const ex = m.map((x) => x.executions || 0);
    const el1 = $('chart-executions'), el2 = $('chart-failures'), el3 = $('chart-lateness'), el4 = $('chart-failovers');
    if (!ex.some((v) => v > 0)) nodata(el1, 'executions');
    else chart(el1, 'executions per minute', m.length, [{ type: 'bar', cls: 'b-exec', values: ex,
      titles: m.map((x) => hhmm(x.at_ms) + ': ' + plural(x.executions || 0, 'execution') + ', ' + plural(x.failures || 0, 'failure')) }],
    niceMax(Math.max.apply(null, ex)), (v) => String(v), xl);
    const rate = m.map((x) => (x.executions ? (100 * (x.failures || 0)) / x.executions : null));
    if (!rate.some((v) => v != null)) nodata(el2, 'failure rate');
    else chart(el2, 'failure rate per minute', m.length, [{ type: 'bar', cls: 'b-fail', values: rate,
      titles: m.map((x, i) => hhmm(x.at_ms) + ': ' + (rate[i] == null ? 'no runs' : rate[i].toFixed(1) + '% (' + (x.failures || 0) + '/' + x.executions + ')')) }],
    Math.min(100, niceMax(Math.max(5, Math.max.apply(null, rate.map((v) => v || 0))))), (v) => v + '%', xl);
    const has = (x) => x.executions > 0 || x.lateness_max_ms > 0;
    const p50 = m.map((x) => (has(x) && x.lateness_p50_ms != null ? x.lateness_p50_ms : null));
    const mx = m.map((x) => (has(x) && x.lateness_max_ms != null ? x.lateness_max_ms : null));
    if (!mx.some((v) => v != null) && !p50.some((v) => v != null)) nodata(el3, 'lateness');
    else {
      const t = m.map((x, i) => hhmm(x.at_ms) + ': p50 ' + ms2(p50[i]) + ', max ' + ms2(mx[i]));
      chart(el3, 'fire lateness p50 and max per minute', m.length, [
        { type: 'line', cls: 'l-max', values: mx, titles: t }, { type: 'line', cls: 'l-p50', values: p50, titles: t }],
      niceMax(Math.max.apply(null, mx.concat(p50).map((v) => v || 0))), ms2, xl);
    }
    const fo = c.failovers || [];
    if (!fo.length) nodata(el4, 'failovers');
    else chart(el4, 'failover durations', fo.length, [{ type: 'bar', cls: 'b-fo', values: fo.map((f) => f.duration_ms || 0),
      titles: fo.map((f) => clock(f.at_ms) + ': ' + (f.from || '?') + ' failed over in ' + dur(f.duration_ms)) }],
    niceMax(Math.max.apply(null, fo.map((f) => f.duration_ms || 0))), ms2,
    [clock(fo[0].at_ms), fo.length > 1 ? clock(fo[fo.length - 1].at_ms) : '']);
  }

  // ---------- rendering a snapshot ----------
  function render(s) {
    if (!s || typeof s !== 'object') return;
    S.snap = s; S.at = performance.now();
    safe(renderHeader, s); safe(renderCards, s); safe(renderNodes, s); safe(renderTasks);
    safe(renderCommands, s); safe(renderEvents, s); safe(renderCharts, s);
    $('live').setAttribute('data-generation', s.generation == null ? '' : String(s.generation));
    // A User Timing mark for `rota bench dashboard`: when the first data is on screen.
    if (!S.firstRendered) { S.firstRendered = true; performance.mark('rota-first-render'); }
  }

  // ---------- connection state & auth ----------
  function setLive(on, text) {
    S.connected = on;
    const el = $('live');
    el.setAttribute('data-connected', on ? 'true' : 'false');
    setText($('live-text'), text || (on ? 'live' : 'disconnected'));
  }
  function showAuth(msg) {
    const el = $('auth-error');
    setText(el, msg);
    el.hidden = !msg;
    $('token-form').classList.toggle('auth-bad', !!msg);
  }
  function showToken() {
    setText($('token-state'), token() ? 'token set' : 'no token', token() ? 'ok-text' : 'muted');
  }

  async function loadOnce() {
    try {
      const res = await fetch('/api/v1/dashboard', { headers: headers({ Accept: 'application/json' }), cache: 'no-store' });
      if (!res.ok) { const m = await errorOf(res); if (isAuth(res.status)) showAuth(m); return false; }
      render(await res.json());
      showAuth('');
      return true;
    } catch (e) { return false; }
  }

  // SSE framing: `event:` / `data:` lines, a blank line ends an event, `:` lines are comments.
  function sseParser(onEvent) {
    let parts = [], cr = false, type = '', data = [];
    function line(l) {
      if (l === '') {
        if (data.length) onEvent(type || 'message', data.join('\n'));
        type = ''; data = [];
        return;
      }
      if (l[0] === ':') return;
      const i = l.indexOf(':');
      const field = i < 0 ? l : l.slice(0, i);
      let value = i < 0 ? '' : l.slice(i + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    return function feed(chunk) {
      let start = 0;
      if (cr) { cr = false; if (chunk[0] === '\n') start = 1; }
      for (;;) {
        const n = chunk.indexOf('\n', start), r = chunk.indexOf('\r', start);
        const i = n < 0 ? r : r < 0 ? n : Math.min(n, r);
        if (i < 0) { if (start < chunk.length) parts.push(chunk.slice(start)); return; }
        parts.push(chunk.slice(start, i));
        const l = parts.join(''); parts = [];
        if (chunk[i] === '\r') {
          if (i + 1 === chunk.length) { cr = true; start = i + 1; } else start = i + (chunk[i + 1] === '\n' ? 2 : 1);
        } else start = i + 1;
        line(l);
      }
    };
  }

  function scheduleRetry(delay, why) {
    clearTimeout(S.retryTimer);
    S.retryAt = performance.now() + delay;
    setLive(false, (why ? why + ' · ' : '') + 'retrying in ' + (delay / 1000).toFixed(1) + ' s');
    S.retryTimer = setTimeout(connect, delay);
  }

  async function connect() {
    clearTimeout(S.retryTimer);
    if (S.ctrl) S.ctrl.abort();
    const ctrl = new AbortController();
    S.ctrl = ctrl;
    setLive(false, 'connecting…');
    let retry = 0, why = 'disconnected', watchdog = 0;
    const arm = () => { clearTimeout(watchdog); watchdog = setTimeout(() => ctrl.abort(), 45000); };
    try {
      const res = await fetch('/api/v1/stream', { headers: headers({ Accept: 'text/event-stream' }), cache: 'no-store', signal: ctrl.signal });
      if (!res.ok) {
        const m = await errorOf(res);
        if (isAuth(res.status)) { showAuth(m); retry = 5000; why = 'unauthorized'; } else why = m;
      } else if (!res.body) {
        why = 'streaming unsupported';
      } else {
        showAuth('');
        setLive(true);
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        // Snapshots arriving in a burst are coalesced: only the newest is parsed and rendered.
        let pending = null;
        const flush = () => {
          const data = pending; pending = null;
          let snap;
          try { snap = JSON.parse(data); } catch (e) { console.error('bad snapshot', e); return; }
          if (S.ctrl !== ctrl) return;
          S.backoff = 500;
          render(snap);
        };
        const feed = sseParser((type, data) => {
          if (type !== 'snapshot' && type !== 'message') return;
          if (pending == null) setTimeout(flush, 0);
          pending = data;
        });
        arm();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          arm();
          feed(dec.decode(value, { stream: true }));
        }
        why = 'stream ended';
      }
    } catch (e) {
      if (S.ctrl !== ctrl) return; // superseded by a newer connection
      why = ctrl.signal.aborted ? 'stream stalled' : S.connected ? 'connection lost' : 'cannot reach node';
    } finally { clearTimeout(watchdog); }
    if (S.ctrl !== ctrl) return;
    const delay = retry || S.backoff;
    if (!retry) S.backoff = Math.min(5000, S.backoff * 2);
    scheduleRetry(delay, why);
  }

  async function restart() {
    clearTimeout(S.retryTimer);
    if (S.ctrl) { S.ctrl.abort(); S.ctrl = null; }
    S.backoff = 500;
    setLive(false, 'connecting…');
    await loadOnce();
    connect();
  }

  // ---------- actions ----------
  function status(result, text) {
    const el = $('action-status');
    el.setAttribute('data-result', result);
    el.textContent = text;
    el.title = clock(Date.now());
  }
  async function act(url, body, what) {
    status('pending', 'sending: ' + what + '…');
    try {
      const res = await fetch(url, {
        method: 'POST', cache: 'no-store',
        headers: headers({ 'Content-Type': 'application/json', Accept: 'application/json' }),
        body: JSON.stringify(body || {}),
      });
      if (!res.ok) { status('error', what + ': ' + (await errorOf(res))); return; }
      let c = {};
      try { c = await res.json(); } catch (e) { /* empty body */ }
      let text = c.seq != null ? 'command #' + c.seq + ' issued: ' + opText(c) : what + ': accepted';
      if (c.warnings && c.warnings.length) text += ' (warning: ' + c.warnings.join('; ') + ')';
      status('ok', text);
      if (!S.connected) loadOnce();
    } catch (e) {
      status('error', what + ': network error: ' + (e && e.message ? e.message : e));
    }
  }
  const enc = encodeURIComponent;
  function onClick(ev) {
    const o = ev.target.closest('button[data-output]');
    if (o) {
      const tr = o.closest('tr');
      if (tr) showOutput(tr.getAttribute('data-task'), o.getAttribute('data-output'));
      return;
    }
    const b = ev.target.closest('button[data-action]');
    if (!b || b.disabled) return;
    const a = b.dataset.action;
    const tr = b.closest('tr');
    if (!tr) return;
    const node = tr.getAttribute('data-node'), task = tr.getAttribute('data-task');
    if (node != null) {
      if (a === 'act-as') {
        const sel = tr.querySelector('select[data-act-as]');
        const target = sel && sel.value;
        if (!target) { status('error', 'choose the node for ' + node + ' to act as'); return; }
        act('/api/v1/nodes/' + enc(node) + '/act-as', { node: target }, 'act-as ' + target + ' on ' + node);
      } else if (a === 'drain' || a === 'undrain' || a === 'stop-acting') {
        act('/api/v1/nodes/' + enc(node) + '/' + a, {}, a + ' ' + node);
      }
    } else if (task != null) {
      if (a === 'pause' || a === 'resume') act('/api/v1/tasks/' + enc(task) + '/' + a, {}, a + ' ' + task);
      else if (a === 'stop' || a === 'start') act('/api/v1/services/' + enc(task) + '/' + a, {}, a + ' ' + task);
    }
  }

  // ---------- a fire's output ----------
  // Shown as text (never as HTML), followed once a second while the fire runs.
  async function showOutput(task, instant) {
    clearTimeout(S.outputTimer);
    const seq = (S.outputSeq = (S.outputSeq || 0) + 1);
    const panel = $('output-panel');
    panel.hidden = false;
    panel.setAttribute('data-task', task);
    panel.setAttribute('data-instant', instant);
    panel.setAttribute('data-done', 'false');
    setText($('output-stdout'), ''); setText($('output-stderr'), '');
    setText($('output-title'), task + ' at ' + full(Number(instant)) + ' · loading…');
    let from = [0, 0];
    const poll = async () => {
      if (seq !== S.outputSeq) return;
      try {
        const res = await fetch('/api/v1/tasks/' + enc(task) + '/fires/' + enc(instant) + '/output?stdout_from=' + from[0] + '&stderr_from=' + from[1],
          { headers: headers({ Accept: 'application/json' }), cache: 'no-store' });
        if (seq !== S.outputSeq) return;
        if (!res.ok) { setText($('output-title'), task + ' at ' + full(Number(instant)) + ' · ' + (await errorOf(res))); return; }
        const o = await res.json();
        $('output-stdout').textContent += o.stdout || '';
        $('output-stderr').textContent += o.stderr || '';
        from = [o.stdout_bytes || 0, o.stderr_bytes || 0];
        const dropped = (o.stdout_dropped || 0) + (o.stderr_dropped || 0);
        setText($('output-title'), task + ' at ' + full(o.instant_ms) + ' · attempt ' + o.attempt + ' · ' + o.outcome +
          (dropped ? ' · ' + dropped + ' earlier bytes not kept' : '') + (o.done ? '' : ' · following…'));
        panel.setAttribute('data-done', o.done ? 'true' : 'false');
        if (!o.done) S.outputTimer = setTimeout(poll, 1000);
      } catch (e) {
        if (seq === S.outputSeq) S.outputTimer = setTimeout(poll, 2000);
      }
    };
    poll();
  }
  function closeOutput() {
    S.outputSeq = (S.outputSeq || 0) + 1;
    clearTimeout(S.outputTimer);
    $('output-panel').hidden = true;
  }

  // Rolling restart: two clicks within 5 s, no dialog.
  let armTimer = 0;
  function disarm() {
    clearTimeout(armTimer);
    const b = $('rolling-restart');
    b.setAttribute('data-armed', 'false');
    b.textContent = 'Rolling restart';
  }
  function onRolling() {
    const b = $('rolling-restart');
    if (b.getAttribute('data-armed') === 'true') {
      disarm();
      act('/api/v1/rolling-restart', {}, 'rolling restart');
    } else {
      b.setAttribute('data-armed', 'true');
      b.textContent = 'Confirm rolling restart?';
      armTimer = setTimeout(disarm, 5000);
    }
  }

  // ---------- wiring ----------
  function init() {
    document.addEventListener('click', onClick);
    document.addEventListener('change', (ev) => {
      const t = ev.target;
      if (t.matches && t.matches('select[data-act-as]')) S.actAs[t.getAttribute('data-act-as')] = t.value;
    });
    $('rolling-restart').addEventListener('click', onRolling);
    $('output-close').addEventListener('click', closeOutput);
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('token');
      const v = input.value.trim();
      input.value = '';
      if (!v) return;
      try { sessionStorage.setItem(TOKEN_KEY, v); } catch (e) { status('error', 'cannot keep the token: sessionStorage unavailable'); }
      showToken(); showAuth('');
      restart();
    });
    $('token-clear').addEventListener('click', () => {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
      $('token').value = '';
      showToken(); showAuth('');
      restart();
    });
    let ft = 0;
    $('task-filter').addEventListener('input', () => { clearTimeout(ft); ft = setTimeout(() => safe(renderTasks), 120); });
    $('task-state').addEventListener('change', () => safe(renderTasks));
    setInterval(() => {
      tickNext(); tickUpdated();
      if (!S.connected && S.retryAt) {
        const left = S.retryAt - performance.now();
        const t = $('live-text').textContent;
        if (left > 0 && /retrying in/.test(t)) setText($('live-text'), t.replace(/retrying in [\d.]+ s/, 'retrying in ' + (left / 1000).toFixed(1) + ' s'));
      }
    }, 1000);
    showToken();
    restart();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();

/* visitwire live screen: Server-Sent Events from /api/live/stream, history from /api/stats.
   Plain JS, no build step; charts by uPlot (engine/static/vendor/uplot, MIT). Times are UTC. */
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US");
const TOPS = [
  ["pages", "Top pages"], ["referrers", "Referrers"], ["channels", "Channels"], ["campaigns", "UTM campaigns"],
  ["browsers", "Browsers"], ["os", "Operating systems"], ["devices", "Devices"], ["status", "Status codes"],
];
const COLORS = { pv: "#58a6ff", sess: "#3fb950", hits: "#8b949e", p50: "#3fb950", p95: "#d29922", p99: "#f85149",
  err: "#bc8cff", limit: "#f85149" };

const state = { visitorsHistory: [], lastFeedKeys: new Set(), charts: {}, mode: "live", lastSnapshot: null,
  historyRange: 3600, annotations: [], firstCall: null };

// What the page asks for besides the opened view (the Site list, the notes) waits for that view's first call
// (state.firstCall, set by a view that has one) or 3 s at most: on embedded chdb queries run one at a time, and
// the Site list's 90-day scan (1.8 s at 10M page views) put itself before the Customers tab's member list.
function afterFirstCall() {
  return Promise.race([Promise.resolve(state.firstCall).catch(() => {}),
    new Promise((resolve) => setTimeout(resolve, 3000))]);
}
// Views beside Live and History register here (customers.js, products.js, ...): name -> show(params).
const VIEWS = { live: () => {}, history: () => historyPreset(state.historyRange) };
// More panels of the live snapshot (live_commerce.js): each called with every snapshot.
const LIVE_RENDERERS = [];

// ---------------------------------------------------------------- helpers
function n(v) { return v === null || v === undefined ? "–" : fmt.format(v); }
function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 ? 2 : 1) + "%"; }
function ms(v) { return v === null || v === undefined ? "–" : (v >= 1000 ? (v / 1000).toFixed(2) + " s" : Math.round(v) + " ms"); }
function hhmmss(epoch) { return new Date(epoch * 1000).toISOString().slice(11, 19); }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function last(arr, back = 1) { return arr && arr.length >= back ? arr[arr.length - back] : null; }
function sum(arr) { return (arr || []).reduce((a, b) => a + (b || 0), 0); }

// ---------------------------------------------------------------- charts
function utcDate(ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }

function chartSize(elm) {
  const wall = document.body.classList.contains("wall");
  return { width: Math.max(200, elm.clientWidth), height: wall ? 330 : 240 };
}

function timeAxis() {
  // HH:MM UTC on the ticks; the date only when the range spans days.
  return axisStyle({ values: (u, vals) => {
    const span = vals.length > 1 ? vals[vals.length - 1] - vals[0] : 0;
    return vals.map((v) => new Date(v * 1000).toISOString().slice(span > 2 * 86400 ? 5 : 11, span > 2 * 86400 ? 10 : 16));
  } });
}

function wallScale(px) { return document.body.classList.contains("wall") ? Math.round(px * 1.45) : px; }

function axisStyle(extra) {
  const px = document.body.classList.contains("wall") ? 17 : 12;
  return Object.assign({ stroke: "#8b949e", font: `${px}px system-ui, sans-serif`, grid: { stroke: "#21262d", width: 1 },
    ticks: { stroke: "#30363d" } }, extra);
}

// Notes on the timeline (annotations.js fills state.annotations): a dashed line and the note at their moment.
function annotationsPlugin() {
  return { hooks: { draw: (u) => {
    const ctx = u.ctx, { top, height } = u.bbox, px = devicePixelRatio;
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle = "#f0c96b";
    ctx.setLineDash([4 * px, 4 * px]);
    ctx.font = `${Math.round(12 * px)}px system-ui, sans-serif`;
    for (const a of state.annotations) {
      if (a.ts < u.scales.x.min || a.ts > u.scales.x.max) continue;
      const x = Math.round(u.valToPos(a.ts, "x", true));
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.fillText(a.text.slice(0, 40), x + 4 * px, top + 14 * px);
    }
    ctx.restore();
  } } };
}

function makeTrafficChart(target) {
  const elm = $(target);
  const opts = Object.assign(chartSize(elm), {
    plugins: [annotationsPlugin()],
    tzDate: utcDate,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(5, hi * 1.1)] } },
    axes: [timeAxis(), axisStyle({ size: wallScale(50) })],
    series: [
      {},
      { label: "page views", stroke: COLORS.pv, width: 2, fill: "rgba(88,166,255,.12)", points: { show: false } },
      { label: "sessions", stroke: COLORS.sess, width: 2, points: { show: false } },
      { label: "hits", stroke: COLORS.hits, width: 1, dash: [4, 3], points: { show: false } },
    ],
  });
  return new uPlot(opts, [[], [], [], []], elm);
}

function makeLatencyChart(target) {
  const elm = $(target);
  const opts = Object.assign(chartSize(elm), {
    tzDate: utcDate,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, ms: { range: (u, lo, hi) => [0, Math.max(50, (hi || 0) * 1.15)] },
      pct: { range: (u, lo, hi) => [0, Math.max(0.1, (hi || 0) * 1.15)] } },
    axes: [
      timeAxis(),
      axisStyle({ scale: "ms", size: wallScale(62), values: (u, vals) => vals.map((v) => (v >= 1000 ? v / 1000 + "s" : v + "ms")) }),
      axisStyle({ scale: "pct", side: 1, size: wallScale(50), grid: { show: false },
        values: (u, vals) => vals.map((v) => Math.round(v * 1000) / 10 + "%") }),
    ],
    series: [
      {},
      // Points too: a minute with traffic between quiet minutes has no neighbour to draw a line to.
      { label: "p50", stroke: COLORS.p50, width: 2, scale: "ms", value: (u, v) => ms(v), points: { show: true, size: 5 } },
      { label: "p95", stroke: COLORS.p95, width: 2, scale: "ms", value: (u, v) => ms(v), points: { show: true, size: 5 } },
      { label: "p99", stroke: COLORS.p99, width: 1.5, scale: "ms", value: (u, v) => ms(v), points: { show: true, size: 4 } },
      { label: "p95 alert", stroke: COLORS.limit, width: 1, dash: [6, 4], scale: "ms", points: { show: false },
        value: (u, v) => ms(v) },
      { label: "error rate", stroke: COLORS.err, width: 2, scale: "pct", fill: "rgba(188,140,255,.10)",
        value: (u, v) => pct(v) },
      { label: "error alert", stroke: COLORS.err, width: 1, dash: [2, 4], scale: "pct", points: { show: false },
        value: (u, v) => pct(v) },
    ],
  });
  return new uPlot(opts, [[], [], [], [], [], [], []], elm);
}

function chart(name, maker) {
  if (!state.charts[name]) state.charts[name] = maker(name);
  return state.charts[name];
}

function resizeCharts() {
  for (const [name, u] of Object.entries(state.charts)) {
    const elm = $(name);
    if (elm && elm.offsetParent !== null) u.setSize(chartSize(elm));
  }
}

// ---------------------------------------------------------------- top lists
function renderTops(container, tops, titles, opts = {}) {
  const root = $(container);
  root.replaceChildren();
  for (const [key, title] of titles) {
    const card = el("div", "card top");
    card.append(el("h2", "", title));
    const table = el("table");
    const head = el("tr");
    head.append(el("th", "", ""));
    for (const h of opts.headers || ["this min", "prev", ""]) head.append(el("th", "", h));
    table.append(head);
    const rows = tops[key] || [];
    const max = Math.max(1, ...rows.map((r) => r.value || 0));
    for (const r of rows) {
      const tr = el("tr");
      const k = el("td", "k");
      const bar = el("div", "barbg");
      bar.style.width = Math.round(100 * (r.value || 0) / max) + "%";
      k.append(bar, el("span", "t", r.key === "" ? "(none)" : r.key));
      k.title = r.key;
      tr.append(k, el("td", "n", n(r.value)));
      if (r.prev !== undefined) {
        tr.append(el("td", "n prev", n(r.prev)));
        const d = (r.value || 0) - (r.prev || 0);
        tr.append(el("td", "n delta " + (d > 0 ? "up" : d < 0 ? "down" : ""), d > 0 ? "▲" : d < 0 ? "▼" : "·"));
      } else if (r.extra !== undefined) {
        tr.append(el("td", "n prev", r.extra));
      }
      table.append(tr);
    }
    card.append(table);
    if (!rows.length) card.append(el("div", "empty", "nothing yet"));
    root.append(card);
  }
}

function liveTops(top) {
  const out = {};
  const cur = (top && top.current) || {}, prev = (top && top.previous) || {};
  for (const [key] of TOPS) {
    const prevMap = new Map((prev[key] || []).map(([k, v]) => [k, v]));
    const rows = (cur[key] || []).map(([k, v]) => ({ key: k, value: v, prev: prevMap.get(k) || 0 }));
    // Items that were busy last minute but not yet this one still deserve a line.
    for (const [k, v] of prev[key] || []) {
      if (rows.length >= 8) break;
      if (!rows.some((r) => r.key === k)) rows.push({ key: k, value: 0, prev: v });
    }
    out[key] = rows.slice(0, 8);
  }
  return out;
}

// ---------------------------------------------------------------- live view
function renderAlerts(alerts) {
  const box = $("alert");
  if (alerts && alerts.length) {
    box.textContent = "⚠ " + alerts.map((a) => a.message).join(" · ");
    box.hidden = false;
  } else {
    box.hidden = true;
  }
}

function renderStartup(st) {
  // the engine is not capturing yet (e.g. compiling its kernels on a first start): say what and how long
  const box = $("startup");
  if (!st || st.state === "running") { box.hidden = true; return; }
  let text = "Starting: capture is not live yet";
  if (st.state === "compiling") {
    text = `Starting: compiling the numba kernels of ${st.rooms.join(" and ")} (${st.reason}), ` +
      `${Math.round(st.elapsed_s)} s of about ${Math.round(st.expected_s)} s; capture starts after that`;
  }
  box.textContent = "⏳ " + text;
  box.hidden = false;
}

function renderSparkline() {
  const c = $("visitors-spark");
  const ctx = c.getContext("2d");
  const w = (c.width = c.clientWidth * devicePixelRatio), h = (c.height = 48 * devicePixelRatio);
  ctx.clearRect(0, 0, w, h);
  const pts = state.visitorsHistory;
  if (pts.length < 2) return;
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0], max = Math.max(1, ...pts.map((p) => p[1]));
  ctx.strokeStyle = "#3fb950";
  ctx.lineWidth = 2 * devicePixelRatio;
  ctx.beginPath();
  pts.forEach(([t, v], i) => {
    const x = ((t - t0) / Math.max(1, t1 - t0)) * w, y = h - (v / max) * (h - 4) - 2;
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

function renderVisitors(s) {
  const now = Date.now() / 1000;
  state.visitorsHistory.push([now, s.visitors_now || 0]);
  while (state.visitorsHistory.length && state.visitorsHistory[0][0] < now - 900) state.visitorsHistory.shift();
  $("visitors-now").textContent = n(s.visitors_now);
  // Trend: against about a minute ago (what this screen has seen so far).
  const ref = state.visitorsHistory.find((p) => p[0] >= now - 60) || state.visitorsHistory[0];
  const d = (s.visitors_now || 0) - ref[1];
  const trend = $("visitors-trend");
  trend.className = "trend " + (d > 0 ? "up" : d < 0 ? "down" : "");
  trend.textContent = d > 0 ? `▲ ${d} vs 1 min ago` : d < 0 ? `▼ ${-d} vs 1 min ago` : "steady";
  $("window-label").textContent = `· active in the last ${Math.round((s.window_s || 300) / 60)} min`;
  renderSparkline();
  $("members-now").textContent = n(s.members_now);
  $("anon-now").textContent = n(s.anonymous_now);
  const tot = (s.members_now || 0) + (s.anonymous_now || 0);
  $("members-bar").style.width = tot ? Math.round((100 * s.members_now) / tot) + "%" : "0";
  $("members-sum").textContent = `= ${n(tot)} visitors`;
  $("bots-now").textContent = n(s.bots_now);
}

function renderMinuteKpis(s) {
  const se = s.series || {};
  // The current minute is still filling up: show it, with the complete previous minute beside it.
  $("pv-min").textContent = n(last(se.pageviews));
  $("pv-min-prev").textContent = `previous minute ${n(last(se.pageviews, 2))}`;
  $("sess-min").textContent = n(last(se.sessions));
  $("sess-min-prev").textContent = `previous minute ${n(last(se.sessions, 2))}`;
  const back = last(se.hits) ? 1 : 2;
  const rate = last(se.error_rate, back), p95 = last(se.p95_ms, back);
  const th = s.thresholds || {};
  $("err-rate").textContent = pct(rate);
  $("err-limit").textContent = `alert above ${pct(th.error_rate)}`;
  $("p95").textContent = ms(p95);
  $("p95-limit").textContent = `alert above ${ms(th.p95_ms)}`;
  $("err-rate").parentElement.classList.toggle("bad", rate !== null && rate > th.error_rate);
  $("p95").parentElement.classList.toggle("bad", p95 !== null && p95 > th.p95_ms);
  $("bot-hits").textContent = `${n(sum(se.bot_hits))} bot hits in the last hour`;
}

function renderLiveCharts(s) {
  const se = s.series || {};
  const xs = se.minutes || [];
  chart("live-traffic", makeTrafficChart).setData([xs, se.pageviews || [], se.sessions || [], se.hits || []]);
  const th = s.thresholds || {};
  chart("live-latency", makeLatencyChart).setData([xs, se.p50_ms || [], se.p95_ms || [], se.p99_ms || [],
    xs.map(() => th.p95_ms), se.error_rate || [], xs.map(() => th.error_rate)]);
}

function feedKey(f) { return `${f.ts}|${f.visitor}|${f.path}`; }

function renderFeed(feed) {
  const box = $("feed");
  const keys = new Set();
  const rows = [];
  for (const f of (feed || []).slice(0, 40)) {
    const key = feedKey(f);
    keys.add(key);
    const row = el("div", "row" + (state.lastFeedKeys.size && !state.lastFeedKeys.has(key) ? " new" : ""));
    row.dataset.key = key;
    const member = !!f.member;
    row.append(
      el("span", "t", hhmmss(f.ts)),
      el("span", member ? "m" : "a", member ? "● member" : "○ visitor"),
      el("span", "v", (f.visitor || "").slice(0, 8)),
      el("span", "p", f.path || ""),
      el("span", "r", f.referrer_host || (f.channel ? `(${f.channel})` : "")),
      el("span", "d", f.device || ""),
      el("span", "g", f.goal ? "★ " + f.goal : ""),
    );
    row.title = `${member ? "member" : "anonymous"} visitor ${f.visitor || ""} · ${f.browser || ""} · session ${f.session_id || ""}`;
    rows.push(row);
  }
  if (!rows.length) rows.push(el("div", "muted", "waiting for page views…"));
  box.replaceChildren(...rows);
  state.lastFeedKeys = keys;
}

function renderLive(s) {
  state.lastSnapshot = s;
  $("clock").textContent = s.now ? hhmmss(s.now) + " UTC" : "";
  renderAlerts(s.alerts);
  renderStartup(s.startup);
  if (state.mode !== "live") return;
  renderVisitors(s);
  renderMinuteKpis(s);
  renderLiveCharts(s);
  renderTops("live-tops", liveTops(s.top), TOPS);
  renderFeed(s.feed);
  for (const render of LIVE_RENDERERS) render(s);
}

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = "conn " + (cls || "");
}

function connectLive() {
  if (!window.EventSource) return pollLive();
  const es = new EventSource("/api/live/stream");
  es.addEventListener("snapshot", (ev) => {
    setConn("live", "ok");
    renderLive(JSON.parse(ev.data));
  });
  es.addEventListener("problem", (ev) => setConn(JSON.parse(ev.data).error, "down"));
  es.onerror = () => setConn("reconnecting…", "down");
}

async function pollLive() {
  for (;;) {
    try {
      const r = await fetch("/api/live");
      const body = await r.json();
      if (!r.ok) throw new Error(body.error);
      setConn("live (polling)", "ok");
      renderLive(body);
    } catch (e) {
      setConn(String(e.message || e), "down");
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
}

// ---------------------------------------------------------------- history view
function intervalFor(seconds) {
  return seconds <= 6 * 3600 ? "minute" : seconds <= 14 * 86400 ? "hour" : "day";
}

async function stats(params) {
  const r = await fetch("/api/stats?" + new URLSearchParams(params));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function renderHistoryTotals(t) {
  const root = $("history-totals");
  root.replaceChildren();
  const closed = t.sessions > 0;  // sessions are stored when they close (idle timeout)
  const items = [["Page views", n(t.pageviews)], ["Visitors", n(t.visitors)], ["Sessions (closed)", n(t.sessions)],
    ["Hits", n(t.hits)], ["Bounce rate", closed ? pct(t.bounce_rate) : "–"],
    ["Avg. session", closed ? Math.round(t.avg_duration) + " s" : "–"], ["Errors", n(t.errors)]];
  for (const [label, value] of items) {
    const card = el("div", "card kpi");
    card.append(el("div", "label", label), el("div", "mid", value));
    root.append(card);
  }
}

const HISTORY_TOPS = [
  ["page", "Top pages", "pageviews"], ["referrer", "Referrers", "pageviews"], ["channel", "Channels", "pageviews"],
  ["campaign", "UTM campaigns", "pageviews"], ["browser", "Browsers", "pageviews"], ["os", "Operating systems", "pageviews"],
  ["device", "Devices", "pageviews"], ["status", "Status codes", "hits"], ["member", "Members vs anonymous", "visitors"],
  ["entry", "Entry pages", "sessions"], ["exit", "Exit pages", "sessions"], ["keyword", "Search keywords", "visitors"],
  ["country", "Countries", "visitors"],
];

async function loadHistory(from, to) {
  const status = $("history-status");
  status.textContent = "loading…";
  const interval = intervalFor(to - from);
  $("history-interval").textContent = `per ${interval}, ${new Date(from * 1000).toISOString().slice(0, 16)} → ` +
    `${new Date(to * 1000).toISOString().slice(0, 16)} UTC`;
  // Whole minutes: the server then answers from its per-minute rollups (several times faster).
  const range = { from: Math.floor(from / 60) * 60, to: Math.ceil(to / 60) * 60 };
  const host = $("history-host").value;
  if (host) range.host = host;  // one site of several: every figure below is that site's
  // The Site list first: it must not wait behind the dozen figure queries (30 s on a busy 2-core engine).
  loadHosts({ from: range.from, to: range.to });
  try {
    const [series, totals, ...tops] = await Promise.all([
      stats({ ...range, interval, metrics: "pageviews,visitors,sessions,hits,error_rate,latency_p50,latency_p95,latency_p99" }),
      stats({ ...range, metrics: "pageviews,visitors,sessions,hits,bounce_rate,avg_duration,errors" }),
      ...HISTORY_TOPS.map(([by, , metric]) => stats({ ...range, by, metrics: metric, limit: 8 })),
    ]);
    const s = series.series;
    const xs = s.map((r) => r.t);
    chart("hist-traffic", makeTrafficChart).setData([xs, s.map((r) => r.pageviews), s.map((r) => r.sessions),
      s.map((r) => r.hits)]);
    const th = (state.lastSnapshot && state.lastSnapshot.thresholds) || {};
    chart("hist-latency", makeLatencyChart).setData([xs, s.map((r) => r.latency_p50), s.map((r) => r.latency_p95),
      s.map((r) => r.latency_p99), xs.map(() => th.p95_ms ?? null), s.map((r) => r.error_rate),
      xs.map(() => th.error_rate ?? null)]);
    renderHistoryTotals(totals.totals);
    const lists = {};
    HISTORY_TOPS.forEach(([by, , metric], i) => {
      lists[by] = tops[i].rows
        // no campaign is not a campaign; direct and the site's own pages are no referrer; no words, no keyword
        .filter((r) => !(["campaign", "referrer", "keyword"].includes(by) && r.key === ""))
        .map((r) => ({ key: by === "country" && r.key === "" ? "(unknown or private)" : r.key, value: r[metric] }));
    });
    renderTops("history-tops", lists, HISTORY_TOPS.map(([by, title]) => [by, title]), { headers: ["", ""] });
    status.textContent = "";
    resizeCharts();
  } catch (e) {
    status.textContent = "could not load history: " + (e.message || e);
  }
}

async function loadHosts(range) {
  // the sites seen in the range, for the Site filter (the chosen one stays even when it had no traffic)
  const select = $("history-host");
  try {
    const res = await stats({ ...range, by: "host", metrics: "pageviews", limit: 100 });
    const keep = select.value;
    const hosts = res.rows.map((r) => r.key).filter((h) => h);
    if (keep && !hosts.includes(keep)) hosts.push(keep);
    select.replaceChildren(new Option("all sites", ""), ...hosts.map((h) => new Option(h, h)));
    select.value = keep;
  } catch (e) { /* the filter keeps its options */ }
}

function historyPreset(seconds) {
  state.historyRange = seconds;
  const to = Date.now() / 1000;
  loadHistory(to - seconds, to);
}

function setupHistory() {
  document.querySelectorAll(".range-btn").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".range-btn").forEach((x) => x.classList.toggle("active", x === b));
    historyPreset(Number(b.dataset.range));
  }));
  $("history-host").addEventListener("change", () => {
    const active = document.querySelector(".range-btn.active");
    if (active) historyPreset(Number(active.dataset.range));
    else $("custom-range").requestSubmit();
  });
  $("custom-range").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const from = Date.parse($("range-from").value + "Z") / 1000, to = Date.parse($("range-to").value + "Z") / 1000;
    if (!(from < to)) {
      $("history-status").textContent = "pick a 'From' before 'To'";
      return;
    }
    document.querySelectorAll(".range-btn").forEach((x) => x.classList.remove("active"));
    loadHistory(from, to);
  });
  const now = new Date();
  $("range-to").value = now.toISOString().slice(0, 16);
  $("range-from").value = new Date(now - 86400e3).toISOString().slice(0, 16);
}

// ---------------------------------------------------------------- modes
function setMode(mode, params = {}) {
  if (!(mode in VIEWS)) mode = "live";
  state.mode = mode;
  for (const name of Object.keys(VIEWS)) {
    $(name).hidden = name !== mode;
    const tab = $("tab-" + name);
    if (tab) {
      tab.classList.toggle("active", name === mode);
      tab.setAttribute("aria-selected", name === mode);
    }
  }
  // The view (and what it shows) is in the address: a reload or a shared link opens the same screen.
  const url = new URL(location.href);
  for (const k of [...url.searchParams.keys()]) if (k !== "wall") url.searchParams.delete(k);
  if (mode !== "live") url.searchParams.set("view", mode);
  for (const [k, v] of Object.entries(params)) if (v) url.searchParams.set(k, v);
  if (site.host && SITE_VIEWS.includes(mode)) url.searchParams.set("host", site.host);  // tables.js
  history.replaceState(null, "", url);
  if (mode === "live") {
    if (state.lastSnapshot) renderLive(state.lastSnapshot);
  } else {
    VIEWS[mode](params);
  }
  resizeCharts();
}

function setWall(on) {
  document.body.classList.toggle("wall", on);
  const url = new URL(location.href);
  on ? url.searchParams.set("wall", "1") : url.searchParams.delete("wall");
  history.replaceState(null, "", url);
  // Axis fonts are fixed when a chart is made: make them again at the new size.
  for (const u of Object.values(state.charts)) u.destroy();
  state.charts = {};
  if (state.mode === "history") historyPreset(state.historyRange);
  else if (state.lastSnapshot) renderLive(state.lastSnapshot);
}

function fitBigNumber(e) {
  e.style.setProperty("--chars", Math.max(3, e.textContent.length));  // app.css sizes the figure by it
}

document.addEventListener("DOMContentLoaded", () => {
  for (const e of document.querySelectorAll(".kpi .big")) {
    fitBigNumber(e);
    new MutationObserver(() => fitBigNumber(e)).observe(e, { childList: true, characterData: true, subtree: true });
  }
  const params = new URLSearchParams(location.search);
  if (params.get("wall") === "1") document.body.classList.add("wall");
  for (const name of Object.keys(VIEWS)) {
    const tab = $("tab-" + name);
    if (tab) tab.addEventListener("click", () => setMode(name));
  }
  $("wall-toggle").addEventListener("click", () => setWall(!document.body.classList.contains("wall")));
  window.addEventListener("resize", resizeCharts);
  setupHistory();
  if (params.get("view")) setMode(params.get("view"), Object.fromEntries(params));
  connectLive();
});

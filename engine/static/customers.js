/* Customers tab (segment sizes, movement, the member list) and the member / visitor profile page.
   Data: /api/segments, /api/customers (JSON pages, CSV export), /api/profiles/... */
"use strict";

// Segment names are the shop's rules (analytics.segments), in their order: colours by position.
const SEGMENT_PALETTE = ["#f0c96b", "#f0883e", "#f85149", "#3fb950", "#56d364", "#58a6ff", "#8b949e", "#bc8cff",
  "#db61a2", "#79c0ff"];
const cust = { segment: "", search: "", sort: "revenue", desc: true, searchTimer: null, names: [], active: 0 };

const MEMBER_COLUMNS = [
  { key: "member_id", label: "member", link: (r) => profileLink("member", r.member_id) },
  { key: "segment", label: "segment" },
  { key: "r", label: "R", num: true, title: "recency quintile, 5 = most recent" },
  { key: "f", label: "F", num: true, title: "frequency quintile, 5 = most visits" },
  { key: "m", label: "M", num: true, title: "monetary quintile, 5 = most spent" },
  { key: "visits", label: "visits", num: true, fmt: n },
  { key: "orders", label: "orders", num: true, fmt: n },
  { key: "revenue", label: "revenue", num: true, fmt: amount },
  { key: "window_orders", label: "orders (window)", num: true, fmt: n, title: "orders in the segment window" },
  { key: "window_revenue", label: "revenue (window)", num: true, fmt: amount, title: "revenue in the segment window" },
  { key: "last_seen", label: "last visit", num: true, fmt: day },
  { key: "first_seen", label: "first visit", num: true, fmt: day },
];

function makeSegmentChart(target, names) {
  const elm = $(target);
  const opts = Object.assign(chartSize(elm), {
    tzDate: utcDate,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(5, (hi || 0) * 1.1)] } },
    axes: [timeAxis(), axisStyle({ size: wallScale(44) })],
    series: [{}, ...names.map((s, i) => ({ label: s, stroke: SEGMENT_PALETTE[i % SEGMENT_PALETTE.length], width: 2,
      points: { show: true, size: 4 } }))],
  });
  return new uPlot(opts, [[], ...names.map(() => [])], elm);
}

function renderSegmentCards(sizes) {
  const root = $("segment-cards");
  root.replaceChildren();
  const total = Object.values(sizes).reduce((a, b) => a + b, 0);
  for (const [i, seg] of Object.keys(sizes).entries()) {
    const b = el("button", "seg" + (cust.segment === seg ? " active" : ""));
    b.style.borderTopColor = SEGMENT_PALETTE[i % SEGMENT_PALETTE.length];
    b.dataset.segment = seg;
    b.setAttribute("aria-pressed", cust.segment === seg);
    b.title = `list the ${seg} members`;
    const count = sizes[seg] || 0;
    b.append(el("div", "label", seg.replace("_", " ")), el("div", "mid", n(count)),
      el("div", "sub", `${total ? Math.round((100 * count) / total) : 0}% of members`));
    b.addEventListener("click", () => {
      cust.segment = cust.segment === seg ? "" : seg;
      $("member-segment").value = cust.segment;
      loadMembers();
    });
    root.append(b);
  }
}

function renderMovement(rows) {
  renderGrid($("segment-movement"), [
    { key: "from", label: "from", fmt: (v) => v || "(first scored)" }, { key: "to", label: "to" },
    { key: "members", label: "members", num: true, fmt: n }], rows, { sort: { key: "members", desc: true },
    empty: "no stored segment changes yet (the worker scores members a minute after it starts)" });
}

async function loadSegments() {
  const seg = await api("/api/segments", { limit: 1 });
  const timeline = seg.timeline || [];
  const names = (seg.sizes || []).map((s) => s.segment);
  if (names.join() !== cust.names.join() && state.charts["segment-timeline"]) {
    state.charts["segment-timeline"].destroy();  // the configured segments changed: new series
    delete state.charts["segment-timeline"];
  }
  cust.names = names;
  chart("segment-timeline", (t) => makeSegmentChart(t, names)).setData([timeline.map((p) => p.at),
    ...names.map((s) => timeline.map((p) => p[s] ?? 0))]);
  renderMovement(seg.movement || []);
}

function memberQuery() {
  return { segment: cust.segment, q: cust.search, sort: cust.sort, order: cust.desc ? "desc" : "asc",
    active_within_s: cust.active || "" };
}

async function loadMembers() {
  const status = $("customers-status");
  status.textContent = "loading…";
  try {
    const res = await api("/api/customers", { ...memberQuery(), limit: 200 });
    renderSegmentCards(res.sizes);
    const select = $("member-segment");
    if (select.options.length !== Object.keys(res.sizes).length + 1) {
      select.replaceChildren(new Option("all", ""), ...Object.keys(res.sizes).map((s) => new Option(s.replace("_", " "), s)));
      select.value = cust.segment;
    }
    renderGrid($("member-table"), MEMBER_COLUMNS, res.rows, {
      sort: { key: cust.sort, desc: cust.desc },
      onSort: (key, desc) => { cust.sort = key; cust.desc = desc; loadMembers(); },
      empty: cust.search || cust.segment ? "no member matches" : "no members yet (nobody logged in)",
    });
    $("member-list-title").textContent = (cust.segment ? `Members · ${cust.segment.replace("_", " ")}` : "Members") +
      (cust.active ? ` · visited in the last ${Math.round(cust.active / 60)} min` : "");
    $("member-active-clear").hidden = !cust.active;
    $("member-count").textContent = `${n(res.total)} of ${n(res.members)} members` +
      (res.total > res.rows.length ? ` · first ${n(res.rows.length)} shown, the CSV has all` : "");
    const csv = { ...memberQuery(), format: "csv", ...(site.host ? { host: site.host } : {}) };
    $("member-csv").href = "/api/customers?" + new URLSearchParams(csv);
    status.textContent = "";
  } catch (e) {
    status.textContent = "could not load members: " + (e.message || e);
  }
}

function setupCustomers() {
  const select = $("member-segment");
  select.addEventListener("change", () => { cust.segment = select.value; loadMembers(); });
  $("member-search").addEventListener("input", (ev) => {
    clearTimeout(cust.searchTimer);
    cust.searchTimer = setTimeout(() => { cust.search = ev.target.value; loadMembers(); }, 250);
  });
  $("profile-back").addEventListener("click", () => setMode("customers"));
  $("member-active-clear").addEventListener("click", () => { cust.active = 0; loadMembers(); });
}

VIEWS.customers = (params) => {
  if (params.segment) cust.segment = params.segment;
  cust.active = Number(params.active) || 0;
  // the member list first (the page's first view), then the segment history below it
  state.firstCall = loadMembers();
  state.firstCall.then(() => loadSegments()).catch((e) => {
    $("customers-status").textContent = "could not load segments: " + (e.message || e);
  });
};

// ---------------------------------------------------------------- profile page
function listCard(title, rows, cols, cls = "") {
  const card = el("div", "card " + cls);
  card.append(el("h2", "", title));
  const table = el("table", "grid");
  renderGrid(table, cols, rows, { empty: "none" });
  card.append(table);
  return card;
}

function kpiCard(label, value, testid) {
  const card = el("div", "card kpi");
  const v = el("div", "mid", value);
  if (testid) v.dataset.testid = testid;
  card.append(el("div", "label", label), v);
  return card;
}

async function loadProfile(params) {
  const kind = params.member ? "member" : "visitor";
  const id = params.member || params.visitor;
  const status = $("profile-status");
  $("profile-title").textContent = `${kind === "member" ? "Member" : "Visitor"} ${id || ""}`;
  $("profile-kpis").replaceChildren();
  $("profile-body").replaceChildren();
  if (!id) { status.textContent = "no member or visitor given"; return; }
  status.textContent = "loading…";
  try {
    const base = `/api/profiles/${kind}/${encodeURIComponent(id)}`;
    const [prof, act, offer] = await Promise.all([api(base), api(base + "/activity"),
      kind === "member" ? api(`/api/recommendations/member/${encodeURIComponent(id)}`) : null]);
    const orders = act.orders || [];
    $("profile-kpis").replaceChildren(
      kpiCard("Visits", n(prof.visits), "profile-visits"), kpiCard("Page views", n(prof.pageviews), "profile-pageviews"),
      kpiCard("Orders", n(prof.purchases), "profile-orders"), kpiCard("Revenue", amount(prof.revenue), "profile-revenue"),
      kpiCard("Last visit", day(prof.last_seen)), kpiCard("First visit", day(prof.first_seen)),
      kpiCard("Visits / week", String(prof.visits_per_week ?? "–")));
    const body = $("profile-body");
    const ids = kind === "member" ? prof.visitor_ids || [] : prof.members || [];
    body.append(
      listCard("Visit timeline", act.visits, [
        { key: "start", label: "start", fmt: day }, { key: "pageviews", label: "pages", num: true },
        { key: "entry_page", label: "entry" }, { key: "exit_page", label: "exit" },
        { key: "device", label: "device" }, { key: "channel", label: "channel" }], "wide"),
      listCard(kind === "member" ? "Linked visitor ids (devices)" : "Members logged in on this id",
        ids.map((v) => ({ id: v })), [{ key: "id", label: "id",
          link: (r) => profileLink(kind === "member" ? "visitor" : "member", r.id, r.id.slice(0, 16)) }]),
      listCard("Orders", orders, [{ key: "ts", label: "when", fmt: day }, { key: "value", label: "amount", num: true,
        fmt: amount }]),
      listCard("Pages", act.pages, [{ key: "name", label: "page" }, { key: "views", label: "views", num: true }]),
      listCard("Products viewed", act.products, [{ key: "name", label: "product" },
        { key: "views", label: "views", num: true }, { key: "last", label: "last", fmt: day }]),
      listCard("Categories", act.categories, [{ key: "name", label: "category" }, { key: "views", label: "views", num: true }]),
      listCard("Menus", act.menus, [{ key: "name", label: "menu" }, { key: "views", label: "views", num: true }]),
      listCard("Devices", prof.devices || [], [{ key: "name", label: "device" }, { key: "count", label: "visits", num: true }]),
      listCard("Goals", act.goals, [{ key: "ts", label: "when", fmt: day }, { key: "goal", label: "goal" },
        { key: "value", label: "value", num: true, fmt: (v) => (v ? amount(v) : "") }]),
      listCard("Recommended next (viewed together)", act.recommendations, [{ key: "product_id", label: "product" },
        { key: "score", label: "score", num: true }, { key: "because_of", label: "because of",
          fmt: (v) => (v || []).join(", ") }]),
    );
    if (offer) {
      body.append(
        listCard("Products bought", offer.bought.map((p) => ({ product_id: p })), [{ key: "product_id", label: "product" }]),
        listCard("Offer next (bought together)", offer.recommendations, [{ key: "product_id", label: "product" },
          { key: "score", label: "orders", num: true }, { key: "because_of", label: "because they bought",
            fmt: (v) => (v || []).join(", ") }]),
      );
    }
    status.textContent = "";
  } catch (e) {
    status.textContent = "could not load the profile: " + (e.message || e);
  }
}

VIEWS.profile = loadProfile;
document.addEventListener("DOMContentLoaded", setupCustomers);

/* Live tab, commerce part: orders / cart adds / revenue per minute, conversion, top products and the
   live goal feed, all from the /api/live snapshot (series.orders, series.carts, commerce, goal_feed). */
"use strict";

function makeOrdersChart(target) {
  const elm = $(target);
  const opts = Object.assign(chartSize(elm), {
    tzDate: utcDate,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, n: { range: (u, lo, hi) => [0, Math.max(5, (hi || 0) * 1.15)] },
      money: { range: (u, lo, hi) => [0, Math.max(10, (hi || 0) * 1.15)] } },
    axes: [timeAxis(), axisStyle({ scale: "n", size: wallScale(44) }),
      axisStyle({ scale: "money", side: 1, size: wallScale(64), grid: { show: false } })],
    series: [
      {},
      { label: "orders", stroke: "#3fb950", width: 2, scale: "n", points: { show: true, size: 4 } },
      { label: "cart adds", stroke: "#d29922", width: 1.5, scale: "n", points: { show: false } },
      { label: "revenue", stroke: "#bc8cff", width: 2, scale: "money", fill: "rgba(188,140,255,.10)",
        value: (u, v) => amount(v) },
    ],
  });
  return new uPlot(opts, [[], [], [], []], elm);
}

function renderCommerceKpis(s) {
  const se = s.series || {}, c = s.commerce || {};
  // This (still filling) minute, with the complete previous one and the window's total beside it.
  $("orders-min").textContent = n(last(se.orders));
  $("orders-hour").textContent = `previous ${n(last(se.orders, 2))} · ${n(c.orders)} in ${c.minutes || 60} min`;
  $("carts-min").textContent = n(last(se.carts));
  $("carts-hour").textContent = `previous ${n(last(se.carts, 2))} · ${n(c.carts)} in ${c.minutes || 60} min`;
  $("revenue-min").textContent = amount(last(se.revenue));
  $("revenue-hour").textContent = `${amount(c.revenue)} in ${c.minutes || 60} min`;
  $("conversion").textContent = c.conversion_rate === null || c.conversion_rate === undefined ? "–"
    : pct(c.conversion_rate);
  $("conversion-sub").textContent = `${n(c.orders)} orders / ${n(c.sessions)} sessions started`;
}

function renderLiveProducts(s) {
  // this minute: product page views, units put in carts and units ordered (from the orders' items)
  const cur = (s.top || {}).current || {};
  const figures = new Map();
  for (const [dim, col] of [["products", 0], ["cart_products", 1], ["order_products", 2]]) {
    for (const [k, v] of cur[dim] || []) {
      if (!figures.has(k)) figures.set(k, [0, 0, 0]);
      figures.get(k)[col] = v;
    }
  }
  const rows = [...figures.entries()].sort((a, b) => b[1][2] - a[1][2] || b[1][0] - a[1][0] || a[0].localeCompare(b[0]));
  const box = $("live-products");
  const title = el("h2", "", "Top products ");
  title.append(el("span", "muted", "this minute"));
  box.replaceChildren(title);
  const table = el("table");
  const head = el("tr");
  for (const h of ["product", "views", "carted", "ordered"]) head.append(el("th", "", h));
  table.append(head);
  const max = Math.max(1, ...rows.map(([, f]) => f[0]));
  for (const [k, [views, carted, ordered]] of rows.slice(0, 8)) {
    const tr = el("tr");
    const td = el("td", "k");
    const bar = el("div", "barbg");
    bar.style.width = Math.round((100 * views) / max) + "%";
    td.append(bar, el("span", "t", k));
    tr.append(td, el("td", "n", n(views)), el("td", "n", n(carted)), el("td", "n", n(ordered)));
    table.append(tr);
  }
  box.append(table);
  if (!rows.length) box.append(el("div", "empty", "no product views this minute yet"));
}

function renderGoalFeed(s) {
  const box = $("goal-feed");
  const rows = [];
  for (const g of (s.goal_feed || []).slice(0, 30)) {
    const row = el("div", "row goal-" + (g.goal || "").replace(/[^a-z0-9_-]/gi, ""));
    const who = g.member_id ? profileLink("member", g.member_id, "● " + shortId(g.member_id))
      : profileLink("visitor", g.visitor_id, "○ " + shortId(g.visitor_id));
    row.append(el("span", "t", hhmmss(g.ts)), el("span", "g", "★ " + g.goal), el("span", "n", g.value ? amount(g.value) : ""),
      who, el("span", "p", g.path || ""));
    rows.push(row);
  }
  if (!rows.length) rows.push(el("div", "muted", "no goal reached yet"));
  box.replaceChildren(...rows);
}

LIVE_RENDERERS.push((s) => {
  renderCommerceKpis(s);
  const se = s.series || {};
  chart("live-orders", makeOrdersChart).setData([se.minutes || [], se.orders || [], se.carts || [], se.revenue || []]);
  renderLiveProducts(s);
  renderGoalFeed(s);
});

// The members now are people: "who?" lists the members seen in the visitors-now window.
document.addEventListener("DOMContentLoaded", () => {
  $("members-link").addEventListener("click", (ev) => {
    ev.preventDefault();
    const win = (state.lastSnapshot && state.lastSnapshot.window_s) || 300;
    setMode("customers", { active: win });
  });
});

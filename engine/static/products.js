/* Products tab: usage ranking per product / category / menu / section / page (/api/products), products
   viewed together with a picked product (/api/recommendations/{id}) and the pages before and after a
   picked page (/api/transitions). */
"use strict";

const prod = { by: "product_id", sort: "views", desc: true, rows: [] };
const PRODUCT_METRICS = [
  ["views", "views"], ["visitors", "visitors"], ["carts", "cart adds"], ["orders", "orders"], ["units", "units"],
  ["revenue", "revenue"], ["view_to_buy", "view → buy"], ["avg_time_s", "time on page"], ["entries", "entries"],
  ["exits", "exits"],
];

function productColumns(rows) {
  const have = new Set(rows.length ? Object.keys(rows[0]) : ["views", "visitors", "avg_time_s", "entries", "exits"]);
  const cols = [{ key: prod.by, label: $("product-by").selectedOptions[0].textContent }];
  if (prod.by === "product_id" && have.has("category")) cols.push({ key: "category", label: "category" });
  const fmts = { revenue: amount, view_to_buy: pct, avg_time_s: (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " s") };
  for (const [key, label] of PRODUCT_METRICS) {
    if (have.has(key)) cols.push({ key, label, num: true, fmt: fmts[key] || n });
  }
  return cols;
}

function renderProducts() {
  renderGrid($("product-table"), productColumns(prod.rows), prod.rows, {
    sort: { key: prod.sort, desc: prod.desc },
    onSort: (key, desc) => { prod.sort = key; prod.desc = desc; $("product-sort").value = key; renderProducts(); },
    onRow: pickProductRow,
    empty: "no product page views in the history yet",
  });
}

async function loadProducts() {
  const status = $("products-status");
  status.textContent = "loading…";
  try {
    const [res, sold] = await Promise.all([api("/api/products", { by: prod.by, limit: 1000 }),
      prod.by === "product_id" ? api("/api/products/sales", { limit: 1000 }) : null]);
    prod.rows = mergeSales(res.rows, sold ? sold.rows : null);
    const sortSelect = $("product-sort");
    const have = productColumns(prod.rows).filter((c) => c.num);
    sortSelect.replaceChildren(...have.map((c) => new Option(c.label, c.key)));
    if (!have.some((c) => c.key === prod.sort)) prod.sort = "views";
    sortSelect.value = prod.sort;
    $("product-title").textContent = `by ${$("product-by").selectedOptions[0].textContent}, all history`;
    renderProducts();
    status.textContent = "";
  } catch (e) {
    status.textContent = "could not load products: " + (e.message || e);
  }
}

// Usage (time on page, entries, exits) and sales (cart adds, orders, units, revenue, view -> buy) of each
// product side by side: a product only put in a cart or bought still gets its row.
function mergeSales(usage, sold) {
  if (!sold) return usage;
  const byId = new Map(usage.map((r) => [r.product_id, { ...r }]));
  for (const s of sold) {
    const row = byId.get(s.product_id) || { product_id: s.product_id, category: "", views: 0, visitors: 0,
      avg_time_s: null, entries: 0, exits: 0 };
    Object.assign(row, { carts: s.carts, orders: s.orders, units: s.units, revenue: s.revenue,
      view_to_buy: s.view_to_buy });
    byId.set(s.product_id, row);
  }
  for (const r of byId.values()) {
    for (const k of ["carts", "orders", "units", "revenue", "view_to_buy"]) if (r[k] === undefined) r[k] = 0;
  }
  return [...byId.values()];
}

function pickProductRow(row) {
  const key = row[prod.by];
  if (prod.by === "product_id") loadTogether(key);
  if (prod.by === "path") loadTransitions(key);
}

async function loadTogether(pid) {
  const box = $("product-together");
  const title = el("h2", "", `${pid}: viewed and bought together`);
  const viewed = el("table", "grid"), bought = el("table", "grid");
  box.replaceChildren(title, viewed, bought);
  try {
    const [v, b] = await Promise.all([api("/api/recommendations/" + encodeURIComponent(pid), { limit: 10 }),
      api("/api/recommendations/bought/" + encodeURIComponent(pid), { limit: 10 })]);
    renderGrid(viewed, [{ key: "product_id", label: "viewed together" },
      { key: "support", label: "sessions", num: true, fmt: n }], v.recommendations || [],
      { empty: "not enough shared sessions yet" });
    renderGrid(bought, [{ key: "recommended_id", label: "bought together" },
      { key: "support", label: "orders", num: true, fmt: n }], b.bought_together || [],
      { empty: "no order holds it with another product yet" });
  } catch (e) {
    box.append(el("div", "muted", "could not load: " + (e.message || e)));
  }
}

async function loadTransitions(page) {
  const box = $("page-transitions");
  const title = el("h2", "", `Before and after ${page}`);
  const before = el("table", "grid"), after = el("table", "grid");
  box.replaceChildren(title, before, after);
  try {
    const res = await api("/api/transitions", { page, limit: 10 });
    renderGrid(before, [{ key: "page", label: "previous page" }, { key: "count", label: "views", num: true, fmt: n }],
      res.previous, { empty: "none" });
    renderGrid(after, [{ key: "page", label: "next page" }, { key: "count", label: "views", num: true, fmt: n }],
      res.next, { empty: "none" });
  } catch (e) {
    box.append(el("div", "muted", "could not load: " + (e.message || e)));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("product-by").addEventListener("change", (ev) => { prod.by = ev.target.value; loadProducts(); });
  $("product-sort").addEventListener("change", (ev) => {
    prod.sort = ev.target.value;
    prod.desc = true;
    renderProducts();
  });
});

VIEWS.products = () => loadProducts();

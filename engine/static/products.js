/* Products tab: usage ranking per product / category / menu / section / page (/api/products), products
   viewed together with a picked product (/api/recommendations/{id}) and the pages before and after a
   picked page (/api/transitions). */
"use strict";

const prod = { by: "product_id", sort: "views", desc: true, rows: [] };
const PRODUCT_METRICS = [
  ["views", "views"], ["visitors", "visitors"], ["carts", "cart adds"], ["orders", "orders"], ["units", "units"],
  ["revenue", "revenue"], ["conversion", "view → buy"], ["avg_time_s", "time on page"], ["entries", "entries"],
  ["exits", "exits"],
];

function productColumns(rows) {
  const have = new Set(rows.length ? Object.keys(rows[0]) : ["views", "visitors", "avg_time_s", "entries", "exits"]);
  const cols = [{ key: prod.by, label: $("product-by").selectedOptions[0].textContent }];
  if (prod.by === "product_id" && have.has("category")) cols.push({ key: "category", label: "category" });
  const fmts = { revenue: amount, conversion: pct, avg_time_s: (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " s") };
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
    const res = await api("/api/products", { by: prod.by, limit: 200 });
    prod.rows = res.rows;
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

function pickProductRow(row) {
  const key = row[prod.by];
  if (prod.by === "product_id") loadTogether(key);
  if (prod.by === "path") loadTransitions(key);
}

async function loadTogether(pid) {
  const box = $("product-together");
  const title = el("h2", "", `Viewed together with ${pid} `);
  title.append(el("span", "muted", "sessions that viewed both"));
  const table = el("table", "grid");
  box.replaceChildren(title, table);
  try {
    const res = await api("/api/recommendations/" + encodeURIComponent(pid), { limit: 10 });
    renderGrid(table, [{ key: "product_id", label: "product" }, { key: "support", label: "sessions", num: true, fmt: n }],
      res.recommendations || res.rows || [], { empty: "not enough shared sessions yet" });
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

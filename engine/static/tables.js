/* Shared by the customer, product and funnel views: JSON fetch, number formats and sortable tables.
   Loaded after app.js (uses its $, el, n, pct). */
"use strict";

const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
function amount(v) { return v === null || v === undefined ? "–" : money.format(v); }
function day(epoch) { return epoch ? new Date(epoch * 1000).toISOString().slice(0, 16).replace("T", " ") : "–"; }
function shortId(id) { return id ? id.slice(0, 10) : ""; }

/* The site filter of the customer, product and funnel views: one choice for the three tabs (and the profile
   pages), kept in the address (?host=); every call of api() below asks for that site's figures only. */
const site = { host: new URLSearchParams(location.search).get("host") || "" };
const SITE_VIEWS = ["customers", "profile", "products", "funnels"];

async function api(path, params = {}) {
  const all = site.host ? { host: site.host, ...params } : params;
  const clean = Object.fromEntries(Object.entries(all).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const qs = new URLSearchParams(clean).toString();
  const r = await fetch(path + (qs ? "?" + qs : ""));
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

/* A table of rows with sortable headers (a button each, so keyboard users sort too).
   columns: [{key, label, fmt?, num?, link?(row) -> element, title?}]; opts.sort = {key, desc};
   opts.onSort(key, desc) when the caller sorts on the server, else rows are sorted here. */
function renderGrid(table, columns, rows, opts = {}) {
  const sort = opts.sort || {};
  let shown = rows;
  if (!opts.onSort && sort.key) {
    const dir = sort.desc ? -1 : 1;
    shown = [...rows].sort((a, b) => {
      const x = a[sort.key], y = b[sort.key];
      if (typeof x === "number" || typeof y === "number") return dir * ((x ?? -Infinity) - (y ?? -Infinity));
      return dir * String(x ?? "").localeCompare(String(y ?? ""));
    });
  }
  const head = el("tr");
  for (const c of columns) {
    const th = el("th", c.num ? "num" : "");
    th.scope = "col";
    const active = sort.key === c.key;
    th.setAttribute("aria-sort", active ? (sort.desc ? "descending" : "ascending") : "none");
    const b = el("button", "sort" + (active ? " active" : ""), c.label + (active ? (sort.desc ? " ▼" : " ▲") : ""));
    if (c.title) b.title = c.title;
    b.addEventListener("click", () => {
      const desc = active ? !sort.desc : c.num !== false && !!c.num;
      const next = { key: c.key, desc };
      if (opts.onSort) opts.onSort(next.key, next.desc);
      else renderGrid(table, columns, rows, { ...opts, sort: next });
    });
    th.append(b);
    head.append(th);
  }
  const thead = el("thead");
  thead.append(head);
  const tbody = el("tbody");
  for (const r of shown) {
    const tr = el("tr");
    if (opts.onRow) {
      tr.classList.add("pick");
      tr.tabIndex = 0;
      tr.addEventListener("click", () => opts.onRow(r));
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") opts.onRow(r); });
    }
    for (const c of columns) {
      const td = el("td", c.num ? "num" : "");
      if (c.link) td.append(c.link(r));
      else td.textContent = c.fmt ? c.fmt(r[c.key], r) : (r[c.key] ?? "");
      tr.append(td);
    }
    tbody.append(tr);
  }
  table.replaceChildren(thead, tbody);
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", "empty", opts.empty || "nothing in this range yet");
    td.colSpan = columns.length;
    tr.append(td);
    tbody.append(tr);
  }
}

/* A link to a member's or visitor's profile page (same page app). */
function profileLink(kind, id, text) {
  const a = el("a", "id-link", text || shortId(id));
  a.href = `?view=profile&${kind}=${encodeURIComponent(id)}`;
  a.title = `${kind} ${id}`;
  a.addEventListener("click", (ev) => {
    ev.preventDefault();
    setMode("profile", { [kind]: id });
  });
  return a;
}

async function loadSites() {
  // the sites with page views in the last 90 days; the chosen one stays even when it had none
  const to = Math.ceil(Date.now() / 1000);
  let hosts = [];
  try {
    const res = await stats({ from: to - 90 * 86400, to, by: "host", metrics: "pageviews", limit: 100 });
    hosts = res.rows.map((r) => r.key).filter((h) => h);
  } catch (e) { /* the filters keep "all sites" and the chosen one */ }
  if (site.host && !hosts.includes(site.host)) hosts.push(site.host);
  for (const select of document.querySelectorAll("select.site-filter")) {
    select.replaceChildren(new Option("all sites", ""), ...hosts.map((h) => new Option(h, h)));
    select.value = site.host;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const select of document.querySelectorAll("select.site-filter")) {
    select.addEventListener("change", () => {
      site.host = select.value;
      for (const other of document.querySelectorAll("select.site-filter")) other.value = site.host;
      setMode(SITE_VIEWS.includes(state.mode) && state.mode !== "profile" ? state.mode : "customers");
    });
  }
  afterFirstCall().then(loadSites);
});

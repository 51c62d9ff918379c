/* Shared by the customer, product and funnel views: JSON fetch, number formats and sortable tables.
   Loaded after app.js (uses its $, el, n, pct). */
"use strict";

const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
function amount(v) { return v === null || v === undefined ? "–" : money.format(v); }
function day(epoch) { return epoch ? new Date(epoch * 1000).toISOString().slice(0, 16).replace("T", " ") : "–"; }
function shortId(id) { return id ? id.slice(0, 10) : ""; }

async function api(path, params = {}) {
  const clean = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
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

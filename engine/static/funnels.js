/* Funnels & retention tab: each configured funnel's steps with conversion and drop-off, filtered by
   channel, member status and device (/api/funnels), and a weekly retention heatmap (/api/cohorts). */
"use strict";

const FUNNEL_CHANNELS = ["direct", "search", "social", "email", "cpc", "affiliate", "display", "other", "internal"];
const FUNNEL_DEVICES = ["desktop", "mobile", "tablet", "other"];

function renderFunnel(f) {
  const card = el("div", "card funnel");
  card.dataset.funnel = f.funnel;
  const title = el("h2", "", `${f.funnel} `);
  title.append(el("span", "muted", `${n(f.entered)} sessions entered · ${n(f.completed)} completed · ` +
    `${pct(f.conversion_rate)} conversion`));
  card.append(title);
  const top = Math.max(1, f.entered);
  for (const s of f.steps) {
    const row = el("div", "step");
    row.dataset.step = s.step;
    const bar = el("div", "bar");
    const fill = el("div");
    fill.style.width = Math.round((100 * s.sessions) / top) + "%";
    bar.append(fill);
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${s.pattern}: ${s.sessions} sessions, ${pct(s.rate_from_start)} of the entries`);
    const figures = el("div", "num");
    figures.append(el("span", "sessions", n(s.sessions)), document.createTextNode(" · " + pct(s.rate_from_previous)));
    if (s.step > 1 && s.drop_off) figures.append(el("div", "drop", `−${n(s.drop_off)} dropped`));
    row.append(el("div", "pattern", `${s.step}. ${s.pattern}`), bar, figures);
    card.append(row);
  }
  return card;
}

async function loadFunnels() {
  const status = $("funnels-status");
  status.textContent = "loading…";
  try {
    const res = await api("/api/funnels", { channel: $("funnel-channel").value, device: $("funnel-device").value,
      member: $("funnel-member").value });
    const root = $("funnel-cards");
    root.replaceChildren(...res.funnels.map(renderFunnel));
    if (!res.funnels.length) root.append(el("div", "card muted", "no funnels configured (analytics.funnels)"));
    status.textContent = "";
  } catch (e) {
    status.textContent = "could not load funnels: " + (e.message || e);
  }
}

function heat(rate) {
  // dark blue (0) to bright green (1); text stays dark on the light end and light on the dark end
  const t = Math.max(0, Math.min(1, rate));
  const c = [Math.round(22 + t * (63 - 22)), Math.round(27 + t * (185 - 27)), Math.round(34 + t * (80 - 34))];
  return { bg: `rgb(${c.join(",")})`, fg: t > 0.45 ? "#0d1117" : "#e6edf3" };
}

async function loadCohorts() {
  const table = $("cohort-table");
  try {
    const res = await api("/api/cohorts", { who: $("cohort-who").value, weeks: 12 });
    const cohorts = res.cohorts.slice(-12);
    const weeks = Math.max(1, ...cohorts.map((c) => c.retained.filter((v) => v !== null).length));
    const head = el("tr");
    head.append(el("th", "", "first week"), el("th", "", "size"));
    for (let w = 0; w < weeks; w++) head.append(el("th", "", `week ${w}`));
    const rows = [head];
    for (const c of cohorts) {
      const tr = el("tr");
      tr.append(el("td", "label", c.cohort), el("td", "label num", n(c.size)));
      for (let w = 0; w < weeks; w++) {
        const rate = c.rates[w];
        const td = el("td", rate === null || rate === undefined ? "none" : "", rate === null || rate === undefined ? "" : pct(rate));
        if (rate !== null && rate !== undefined) {
          const { bg, fg } = heat(rate);
          td.style.background = bg;
          td.style.color = fg;
          td.title = `${n(c.retained[w])} of ${n(c.size)} came back in week ${w}`;
        }
        tr.append(td);
      }
      rows.push(tr);
    }
    if (!cohorts.length) rows.push(el("tr", "", ""));
    table.replaceChildren(...rows);
  } catch (e) {
    table.replaceChildren(el("caption", "muted", "could not load cohorts: " + (e.message || e)));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const c of FUNNEL_CHANNELS) $("funnel-channel").append(new Option(c, c));
  for (const d of FUNNEL_DEVICES) $("funnel-device").append(new Option(d, d));
  for (const id of ["funnel-channel", "funnel-device", "funnel-member"]) $(id).addEventListener("change", loadFunnels);
  $("cohort-who").addEventListener("change", loadCohorts);
});

VIEWS.funnels = () => { loadFunnels(); loadCohorts(); };

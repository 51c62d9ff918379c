/* Notes on the timeline ("newsletter sent"): added and deleted on the History tab, drawn on the traffic
   charts of Live and History (app.js annotationsPlugin); /api/annotations. */
"use strict";

async function loadAnnotations(from, to) {
  try {
    state.annotations = (await api("/api/annotations", { from: Math.floor(from), to: Math.ceil(to) })).annotations;
  } catch (e) {
    return;  // the charts simply show no notes
  }
  for (const u of Object.values(state.charts)) u.redraw();
  renderNoteList();
}

function renderNoteList() {
  const list = $("note-list");
  list.replaceChildren(...state.annotations.map((a) => {
    const li = el("li", "", `${new Date(a.ts * 1000).toISOString().slice(0, 16).replace("T", " ")} · ${a.text} `);
    const del = el("button", "", "×");
    del.title = del.ariaLabel = `delete the note "${a.text}"`;
    del.addEventListener("click", async () => {
      await fetch("/api/annotations/" + encodeURIComponent(a.annotation_id), { method: "DELETE" });
      state.annotations = state.annotations.filter((x) => x.annotation_id !== a.annotation_id);
      renderNoteList();
      for (const u of Object.values(state.charts)) u.redraw();
    });
    li.append(del);
    return li;
  }));
}

function visibleRange() {
  // the live charts' last hour, or the History tab's preset range (a custom one reloads with its figures)
  const now = Date.now() / 1000;
  return [now - (state.mode === "history" ? state.historyRange : 3600) - 60, now + 60];
}

document.addEventListener("DOMContentLoaded", () => {
  $("note-at").value = new Date().toISOString().slice(0, 16);
  $("note-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = $("note-status");
    const ts = Date.parse($("note-at").value + "Z") / 1000;
    const r = await fetch("/api/annotations", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ts, text: $("note-text").value }) });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { status.textContent = body.error || r.statusText; return; }
    status.textContent = "";
    $("note-text").value = "";
    loadAnnotations(...visibleRange());
  });
  afterFirstCall().then(() => loadAnnotations(...visibleRange()));
  setInterval(() => loadAnnotations(...visibleRange()), 60_000);
});

// Whenever the History tab loads a range, the notes of that range come with it.
const loadHistoryFigures = loadHistory;
loadHistory = (from, to) => {  // eslint-disable-line no-global-assign
  loadAnnotations(from, to);
  return loadHistoryFigures(from, to);
};

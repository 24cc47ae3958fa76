// The camera grid: one card per camera, updated from the server-sent events of /api/v1/live.
"use strict";
const API = "/api/v1";
const grid = document.getElementById("grid");
const template = document.getElementById("card");
const cards = new Map();

function card(id) {
  if (!cards.has(id)) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.id = id;
    node.querySelector(".id").textContent = id;
    grid.appendChild(node);
    cards.set(id, node);
  }
  return cards.get(id);
}

function show(view) {
  const node = card(view.id);
  const label = view.label ? `${view.label.name.split(",")[0]} ${view.label.score.toFixed(2)}` : "no result yet";
  node.querySelector(".label").textContent = label;
  node.querySelector(".scene").textContent = view.scene ? view.scene.name : "-";
  const state = node.querySelector(".state");
  state.className = `state ${view.state}`;
  const health = view.health.length ? ` (${view.health.join(", ")})` : "";
  state.textContent = view.state === "live" ? `live${health}` : `${view.state}: ${view.reason}`;
  const effective = view.fps_effective === null ? "-" : view.fps_effective;
  node.querySelector(".fps").textContent = `${effective} / ${view.fps}`;
  node.querySelector(".age").textContent = view.frame_age_p95_ms === null ? "-" : `${Math.round(view.frame_age_p95_ms)} ms`;
  node.querySelector(".classified").textContent = view.frames.classified;
  node.querySelector(".stale").textContent = view.frames.stale;
  const img = node.querySelector("img");
  img.alt = `latest picture of ${view.id}`;
  img.src = `${API}/streams/${encodeURIComponent(view.id)}/snapshot.jpg?t=${Date.now()}`;
}

function update(views) {
  const seen = new Set(views.map((v) => v.id));
  for (const [id, node] of cards) {
    if (!seen.has(id)) { node.remove(); cards.delete(id); }
  }
  views.forEach(show);
  const live = views.filter((v) => v.state === "live").length;
  document.getElementById("summary").textContent = `${views.length} camera(s), ${live} live`;
}

const events = new EventSource(`${API}/live`);
events.addEventListener("streams", (e) => update(JSON.parse(e.data)));
events.onerror = () => { document.getElementById("summary").textContent = "reconnecting…"; };

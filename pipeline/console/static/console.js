// The console: a grid of cameras (live from /api/v1/live), a camera page (#camera=<id>), add and remove.
// Plain JavaScript, no build step. Requests carry the token typed in the header (kept for this tab only).
"use strict";
const API = "/api/v1";
const $ = (id) => document.getElementById(id);
const grid = $("grid");
const cards = new Map();
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("vigil-token") || "";
tokenInput.addEventListener("change", () => { sessionStorage.setItem("vigil-token", tokenInput.value); });

function headers() {
  return tokenInput.value ? { Authorization: `Bearer ${tokenInput.value}` } : {};
}

async function call(method, path, body) {
  const init = { method, headers: { ...headers() } };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const response = await fetch(`${API}${path}`, init);
  if (!response.ok) {
    let why = `${response.status} ${response.statusText}`;
    try {
      const detail = (await response.json()).detail;
      why = typeof detail === "string" ? detail : detail.message;
    } catch (e) { /* no JSON body */ }
    throw new Error(why);
  }
  return response.status === 204 ? null : response.json();
}

const pictures = new Map();  // img element -> object URL shown (revoked when replaced)
async function showPicture(img, id) {
  const response = await fetch(`${API}/streams/${encodeURIComponent(id)}/snapshot.jpg`, { headers: headers(), cache: "no-store" });
  if (!response.ok) { img.removeAttribute("src"); img.hidden = true; img.dataset.picture = "none"; return; }
  const url = URL.createObjectURL(await response.blob());
  if (pictures.has(img)) URL.revokeObjectURL(pictures.get(img));
  pictures.set(img, url);
  img.src = url;
  img.hidden = false;
  img.dataset.picture = String(Number(img.dataset.picture || 0) + 1);
}

function labelText(view) {
  return view.label ? `${view.label.name.split(",")[0]} ${view.label.score.toFixed(2)}` : "no result yet";
}

function card(id) {
  if (!cards.has(id)) {
    const node = $("card").content.firstElementChild.cloneNode(true);
    node.dataset.id = id;
    node.querySelector(".id").textContent = id;
    for (const link of node.querySelectorAll("a")) link.href = `#camera=${encodeURIComponent(id)}`;
    node.querySelector(".remove").addEventListener("click", () => remove(id));
    grid.appendChild(node);
    cards.set(id, node);
  }
  return cards.get(id);
}

function showCard(view) {
  const node = card(view.id);
  node.querySelector(".label").textContent = labelText(view);
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
  showPicture(img, view.id);
}

function update(views) {
  const seen = new Set(views.map((v) => v.id));
  for (const [id, node] of cards) {
    if (!seen.has(id)) { node.remove(); cards.delete(id); }
  }
  views.forEach(showCard);
  const live = views.filter((v) => v.state === "live").length;
  $("summary").textContent = `${views.length} camera(s), ${live} live`;
  const open = selected();
  if (open) showCamera(views.find((v) => v.id === open));
}

// Server-sent events read with fetch, so that the token can go in a header.
async function follow() {
  for (;;) {
    try {
      const response = await fetch(`${API}/live`, { headers: headers(), cache: "no-store" });
      if (!response.ok) throw new Error(`${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = message.split("\n").find((line) => line.startsWith("data: "));
          if (data) update(JSON.parse(data.slice(6)));
        }
      }
    } catch (e) { /* reconnect below */ }
    $("summary").textContent = "reconnecting…";
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// Per sink, the records its output refused for good (set aside in the results dead-letter) and why.
function sinkLine(sink) {
  const li = document.createElement("li");
  li.dataset.sink = sink.name;
  const last = sink.last_rejection;
  if (!sink.rejected_records || !last) {
    li.textContent = `${sink.name}: nothing refused`;
    return li;
  }
  li.className = "refused";
  const status = last.status ? ` (HTTP ${last.status})` : "";
  li.textContent = `${sink.name}: ${sink.rejected_records} record(s) refused, in the dead-letter; last${status} at ` +
    `${new Date(last.at).toLocaleString()}: ${last.reason}`;
  return li;
}

async function showSinks() {
  for (;;) {
    try {
      const sinks = await call("GET", "/sinks");
      $("sinks").querySelector("ul").replaceChildren(...sinks.map(sinkLine));
      $("sinks").hidden = sinks.length === 0 || Boolean(selected());
    } catch (e) { /* shown again at the next poll */ }
    await new Promise((r) => setTimeout(r, 5000));
  }
}

async function remove(id) {
  if (!confirm(`Remove camera ${id}?`)) return;
  try { await call("DELETE", `/streams/${encodeURIComponent(id)}`); location.hash = ""; }
  catch (e) { alert(`Not removed: ${e.message}`); }
}

$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const out = $("add-result");
  const body = { id: form.id.value.trim(), url: form.url.value.trim(), fps: Number(form.fps.value), loop: form.loop.checked };
  try {
    await call("POST", "/streams", body);
    out.className = ""; out.textContent = `added ${body.id}: it appears when its ingest worker starts it`;
    form.reset();
  } catch (e) { out.className = "error"; out.textContent = e.message; }
});

function selected() {
  const m = location.hash.match(/^#camera=(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

let timelineShown = 0;
async function showCamera(view) {
  if (!view) return;
  $("camera-id").textContent = view.id;
  const box = $("camera");
  box.querySelector(".label").textContent = labelText(view);
  box.querySelector(".scene").textContent = view.scene ? view.scene.name : "-";
  showPicture($("camera-picture"), view.id);
  showZones(view);
  const settings = { url: view.url, state: view.state + (view.reason && view.state !== "live" ? `: ${view.reason}` : ""),
                     fps: `${view.fps_effective ?? "-"} / ${view.fps}`, resize: view.resize, loop: view.loop };
  $("camera-settings").replaceChildren(...Object.entries(settings).flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v);
    return [dt, dd];
  }));
  if (Date.now() - timelineShown < 2000) return;
  timelineShown = Date.now();
  const id = encodeURIComponent(view.id);
  const [events, results] = await Promise.all([call("GET", `/streams/${id}/events?limit=100`),
                                               call("GET", `/streams/${id}/results?limit=20`)]);
  $("camera-timeline").replaceChildren(...events.reverse().map((e) => {
    const li = document.createElement("li");
    const what = e.event === "state_changed" && e.classifier ? `${e.zone} ${e.classifier} → ${e.to}` :
      e.event === "state_changed" ? `${e.state} ${e.reason}` :
      e.event === "health_changed" ? `${e.condition} ${e.active ? "began" : "cleared"}` : `${e.event.replace("_changed", "")} → ${e.to ?? e.label}`;
    li.textContent = `${e.time}  ${what}`;
    return li;
  }));
  $("camera-results").tBodies[0].replaceChildren(...results.reverse().map((r) => {
    const tr = document.createElement("tr");
    const top = r.top_k[0] || { label: "-", score: 0 };
    for (const text of [new Date(r.capture_ts * 1000).toISOString(), top.label.split(",")[0], top.score.toFixed(2),
                        r.scene ? r.scene.label : "-", `${Math.round(r.latency_ms.total)} ms`]) {
      const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
    }
    return tr;
  }));
}

// Zones: drawn on the camera's picture with what each one answers (state classifiers' states, other
// classifiers' labels, else the ImageNet label); a new one is drawn with the mouse and saved with PUT .../zones.
const SVG = "http://www.w3.org/2000/svg";
const shapes = $("zone-shapes");
let cameraZones = [];  // the open camera's zones, as its view gives them
let drawing = null;  // {x0, y0, x1, y1}, fractions of the picture, while a new zone is drawn

function zoneText(z) {
  const states = Object.entries(z.states || {}).map(([c, s]) => `${c}: ${s.state}`);
  const answers = Object.entries(z.classifiers || {}).filter(([c]) => !(c in (z.states || {})))
    .map(([c, a]) => `${c}: ${a.label} ${a.score.toFixed(2)}`);
  const parts = [...states, ...answers];
  if (!parts.length && z.label) parts.push(`${z.label.name.split(",")[0]} ${z.label.score.toFixed(2)}`);
  if (z.problem) parts.push(`not classified: ${z.problem}`);
  return `${z.id}: ${parts.join(", ") || "no result yet"}`;
}

function box(d) {
  return [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)]
    .map((v) => Math.round(v * 10000) / 10000);
}

function shape(z, kind) {
  const el = document.createElementNS(SVG, z.polygon ? "polygon" : "rect");
  if (z.polygon) el.setAttribute("points", z.polygon.map((p) => p.join(",")).join(" "));
  else {
    const [x1, y1, x2, y2] = z.xyxy;
    for (const [k, v] of Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1 })) el.setAttribute(k, v);
  }
  el.setAttribute("class", `zone ${kind}`);
  el.dataset.zone = z.id;
  return el;
}

function drawZones() {
  const drawn = cameraZones.map((z) => shape(z, z.id === "full" ? "full" : ""));
  if (drawing) drawn.push(shape({ id: "new", xyxy: box(drawing) }, "drawing"));
  shapes.replaceChildren(...drawn);
}

function showZones(view) {
  cameraZones = view.zones || [];
  drawZones();
  $("zone-labels").replaceChildren(...cameraZones.filter((z) => z.id !== "full").map((z) => {
    const span = document.createElement("span");
    span.dataset.zone = z.id;
    span.style.left = `${z.xyxy[0] * 100}%`;
    span.style.top = `${z.xyxy[1] * 100}%`;
    span.textContent = zoneText(z);
    return span;
  }));
  $("zone-list").replaceChildren(...cameraZones.map((z) => {
    const li = document.createElement("li");
    li.dataset.zone = z.id;
    li.textContent = zoneText(z);
    if (z.id !== "full") {
      const button = document.createElement("button");
      button.textContent = "remove";
      button.addEventListener("click", () => saveZones(cameraZones.filter((o) => o.id !== z.id), `removed ${z.id}`));
      li.appendChild(button);
    }
    return li;
  }));
}

function asConfig(z) {  // a zone of the view as streams[].zones takes it
  return z.polygon ? { id: z.id, polygon: z.polygon, resize: z.resize } : { id: z.id, xyxy: z.xyxy, resize: z.resize };
}

async function saveZones(zones, done) {
  const out = $("zone-result");
  try {
    await call("PUT", `/streams/${encodeURIComponent(selected())}/zones`, zones.filter((z) => z.id !== "full").map(asConfig));
    out.className = ""; out.textContent = `${done}: the next frames are cut by it`;
    return true;
  } catch (e) { out.className = "error"; out.textContent = e.message; return false; }
}

function fraction(event) {
  const r = shapes.getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((event.clientX - r.left) / r.width), clamp((event.clientY - r.top) / r.height)];
}

$("zone-draw").addEventListener("click", () => {
  drawing = null; shapes.classList.add("draw"); $("zone-form").hidden = true; drawZones();
  $("zone-result").className = ""; $("zone-result").textContent = "drag a rectangle on the picture";
});
shapes.addEventListener("mousedown", (event) => {
  if (!shapes.classList.contains("draw")) return;
  const [x, y] = fraction(event);
  drawing = { x0: x, y0: y, x1: x, y1: y };
  event.preventDefault();
});
window.addEventListener("mousemove", (event) => {
  if (!drawing || !shapes.classList.contains("draw")) return;
  [drawing.x1, drawing.y1] = fraction(event);
  drawZones();
});
window.addEventListener("mouseup", () => {
  if (!drawing || !shapes.classList.contains("draw")) return;
  shapes.classList.remove("draw");
  $("zone-form").hidden = false;
  $("zone-result").textContent = `new zone ${box(drawing).join(", ")} (xyxy): name it`;
  $("zone-form").id.focus();
});
$("zone-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  if (!drawing) { $("zone-result").textContent = "drag a rectangle on the picture first"; return; }
  const zone = { id: form.id.value.trim(), xyxy: box(drawing), resize: form.resize.value };
  if (await saveZones([...cameraZones, zone], `saved zone ${zone.id}`)) {
    drawing = null; form.reset(); form.hidden = true; drawZones();
  }
});
$("zone-cancel").addEventListener("click", () => {
  drawing = null; $("zone-form").hidden = true; shapes.classList.remove("draw"); $("zone-result").textContent = "";
  drawZones();
});

function route() {
  const id = selected();
  $("camera").hidden = !id;
  grid.hidden = Boolean(id);
  $("add").hidden = Boolean(id);
  timelineShown = 0;
}
window.addEventListener("hashchange", route);
$("camera-remove").addEventListener("click", () => { const id = selected(); if (id) remove(id); });
route();
follow();
showSinks();

// The dmst page: plain JavaScript, no build step. It only talks to the HTTP API:
// /v1/presets, /v1/models, /v1/schema, /v1/mix (the mix, with its settings in X-Dmst-Settings)
// and /v1/curves (EQ and compressor curves computed by dmst's own effect functions).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, schema: null, settings: null, inputLufs: null, mixUrl: null, rawUrl: null,
                jsonUrl: null, renders: 0, pending: null, busy: false, again: null };

function headers() {
  const key = $("api-key").value.trim();
  localStorage.setItem("dmst-api-key", key);
  return key ? { "X-API-Key": key } : {};
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { const e = await r.json(); message = e.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return r;
}

async function loadLists() {
  $("api-key").value = localStorage.getItem("dmst-api-key") || "";
  try {
    const [presets, models, schema] = await Promise.all(
      ["/v1/presets", "/v1/models", "/v1/schema"].map((p) => api(p).then((r) => r.json())));
    state.schema = schema;
    $("presets").replaceChildren(...presets.map((p) => {
      const label = document.createElement("label");
      label.title = p.changes.join("\n") || "no changes";
      const box = document.createElement("input");
      box.type = "checkbox"; box.value = p.name; box.id = `preset-${p.name}`;
      box.addEventListener("change", () => schedule({ predict: true }));
      label.append(box, " " + p.name);
      return label;
    }));
    $("model").replaceChildren(...models.map((m) => new Option(m.name, m.name)));
    status("choose a vocal file");
  } catch (e) {
    status(`cannot reach the service: ${e.message}`, true);
  }
}

function chosenPresets() {
  return [...document.querySelectorAll("#presets input:checked")].map((b) => b.value);
}

// One render at a time; a change made meanwhile renders once the current one is done.
function schedule(what) {
  if (!state.file) return;
  state.again = what;
  clearTimeout(state.pending);
  state.pending = setTimeout(run, 150);
}

async function run() {
  if (state.busy) return;
  const what = state.again;
  state.again = null;
  if (!what) return;
  state.busy = true;
  try {
    await render(what);
  } catch (e) {
    status(e.message, true);
  } finally {
    state.busy = false;
    if (state.again) run();
  }
}

async function render({ predict }) {
  const form = new FormData();
  form.append("audio", state.file, state.file.name);
  form.append("format", $("format").value);
  form.append("model", $("model").value || "default");
  if (predict || !state.settings) {
    for (const p of chosenPresets()) form.append("preset", p);
    form.append("amount", $("amount").value);
  } else {
    form.append("params", JSON.stringify(state.settings));
  }
  status("rendering...");
  const started = performance.now();
  const r = await api("/v1/mix", { method: "POST", body: form });
  const blob = await r.blob();
  state.settings = JSON.parse(r.headers.get("X-Dmst-Settings"));
  state.inputLufs = parseFloat(r.headers.get("X-Dmst-Input-Lufs"));
  const peak = parseFloat(r.headers.get("X-Dmst-True-Peak-Dbtp"));
  const mix = $("mix-audio");
  const at = mix.currentTime, wasPlaying = !mix.paused;
  if (state.mixUrl) URL.revokeObjectURL(state.mixUrl);
  state.mixUrl = URL.createObjectURL(blob);
  mix.src = state.mixUrl;
  mix.currentTime = at;
  if (wasPlaying) { mix.play(); }
  matchLoudness();
  offerDownloads(blob);
  buildTable();
  drawCurves();
  state.renders += 1;
  $("render-count").textContent = String(state.renders);
  $("play").disabled = false;
  const ms = Math.round(performance.now() - started);
  status(`mixed in ${ms} ms; true peak ${peak.toFixed(1)} dBTP; presets: ${state.settings.meta.presets.join(", ") ||
         "none"} (amount ${state.settings.meta.amount})`);
}

// The raw vocal is heard at the mix's loudness: the louder of the two is turned down.
function matchLoudness() {
  const target = state.settings.output.loudness_lufs;
  const diff = target - state.inputLufs; // dB the mix is louder than the raw
  const raw = $("raw-audio"), mix = $("mix-audio");
  raw.volume = diff >= 0 ? 1 : Math.pow(10, diff / 20);
  mix.volume = diff >= 0 ? Math.pow(10, -diff / 20) : 1;
  $("match").textContent = `raw ${state.inputLufs.toFixed(1)} LUFS, mix ${target.toFixed(1)} LUFS: ` +
    `${diff >= 0 ? "mix" : "raw"} turned down ${Math.abs(diff).toFixed(1)} dB`;
  applyAB();
}

function applyAB() {
  const listenRaw = $("ab-raw").checked;
  $("raw-audio").muted = !listenRaw;
  $("mix-audio").muted = listenRaw;
}

function stem() {
  return state.file.name.replace(/\.[^.]*$/, "") || "vocal";
}

function offerDownloads(blob) {
  const fmt = $("format").value;
  const a = $("download-mix");
  a.href = state.mixUrl; a.download = `${stem()}_mix.${fmt}`; a.setAttribute("aria-disabled", "false");
  if (state.jsonUrl) URL.revokeObjectURL(state.jsonUrl);
  state.jsonUrl = URL.createObjectURL(new Blob([JSON.stringify(state.settings, null, 2) + "\n"],
                                               { type: "application/json" }));
  const j = $("download-json");
  j.href = state.jsonUrl; j.download = `${stem()}_settings.json`; j.setAttribute("aria-disabled", "false");
}

function buildTable() {
  const body = $("settings").tBodies[0];
  const rows = [];
  let group = null;
  for (const p of state.schema.params) {
    if (p.group !== group) {
      group = p.group;
      const tr = document.createElement("tr");
      tr.innerHTML = `<th class="group" colspan="4">${group}</th>`;
      rows.push(tr);
    }
    const tr = document.createElement("tr");
    const discrete = p.choices && p.choices.length > 0;  // a discrete row: only its choices (a menu)
    const input = document.createElement(discrete ? "select" : "input");
    if (discrete) {
      for (const c of p.choices) input.add(new Option(String(c), String(c)));
    } else {
      input.type = "number"; input.min = p.minimum; input.max = p.maximum; input.step = "any";
    }
    input.id = `param-${p.key}`;
    input.value = discrete ? String(state.settings[p.group][p.name]) : +state.settings[p.group][p.name].toPrecision(4);
    input.addEventListener("change", () => {
      const v = parseFloat(input.value);
      if (!Number.isFinite(v) || v < p.minimum || v > p.maximum) {
        status(`${p.key} must be between ${p.minimum} and ${p.maximum} ${p.unit}`, true);
        return;
      }
      state.settings[p.group][p.name] = v;
      schedule({ predict: false });
    });
    const name = document.createElement("td"); name.textContent = p.name; name.title = p.description;
    const cell = document.createElement("td"); cell.append(input);
    const unit = document.createElement("td"); unit.className = "unit"; unit.textContent = p.unit;
    const range = document.createElement("td"); range.className = "unit";
    range.textContent = discrete ? p.choices.join(", ") : `${p.minimum} .. ${p.maximum}`;
    tr.append(name, cell, unit, range);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

async function drawCurves() {
  const groups = {};
  for (const g of state.schema.groups) groups[g] = state.settings[g];
  const r = await api("/v1/curves", { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify({ settings: groups, points: 256 }) });
  const c = await r.json();
  plot($("eq-canvas"), c.eq.freq_hz, c.eq.gain_db, { log: true, xmin: 20, xmax: 20000, ymin: -18, ymax: 18,
       title: "EQ (dB)", xticks: [50, 100, 200, 500, 1000, 2000, 5000, 10000], yticks: [-12, -6, 0, 6, 12] });
  const comp = state.settings.compressor;
  plot($("comp-canvas"), c.compressor.input_db, c.compressor.output_db, { xmin: -80, xmax: 6, ymin: -80, ymax: 30,
       title: `compressor: ${comp.ratio.toFixed(2)}:1 at ${comp.threshold_db.toFixed(1)} dBFS, attack ` +
              `${comp.attack_ms.toPrecision(3)} ms, release ${comp.release_ms.toPrecision(3)} ms`,
       xticks: [-72, -60, -48, -36, -24, -12, 0], yticks: [-72, -48, -24, 0, 24], diagonal: true,
       marker: c.compressor.threshold_db });
}

// A plain line plot on a canvas (drawing only: the numbers come from the server).
function plot(canvas, xs, ys, o) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height, m = 34;
  const fx = o.log ? (x) => (Math.log10(x) - Math.log10(o.xmin)) / (Math.log10(o.xmax) - Math.log10(o.xmin))
                   : (x) => (x - o.xmin) / (o.xmax - o.xmin);
  const px = (x) => m + fx(x) * (w - 2 * m);
  const py = (y) => h - m - (Math.min(Math.max(y, o.ymin), o.ymax) - o.ymin) / (o.ymax - o.ymin) * (h - 2 * m);
  g.clearRect(0, 0, w, h);
  g.font = "11px sans-serif"; g.fillStyle = "#555"; g.strokeStyle = "#e4e4e4"; g.lineWidth = 1;
  for (const x of o.xticks) {
    g.beginPath(); g.moveTo(px(x), m); g.lineTo(px(x), h - m); g.stroke();
    g.fillText(x >= 1000 ? `${x / 1000}k` : String(x), px(x) - 8, h - m + 14);
  }
  for (const y of o.yticks) {
    g.beginPath(); g.moveTo(m, py(y)); g.lineTo(w - m, py(y)); g.stroke();
    g.fillText(String(y), 4, py(y) + 4);
  }
  if (o.diagonal) {
    g.strokeStyle = "#aaa"; g.setLineDash([4, 4]);
    g.beginPath(); g.moveTo(px(o.xmin), py(o.xmin)); g.lineTo(px(o.xmax), py(o.xmax)); g.stroke();
    g.setLineDash([]);
  }
  if (o.marker !== undefined) {
    g.strokeStyle = "#d33"; g.beginPath(); g.moveTo(px(o.marker), m); g.lineTo(px(o.marker), h - m); g.stroke();
  }
  g.strokeStyle = "#1f77b4"; g.lineWidth = 2; g.beginPath();
  xs.forEach((x, i) => (i ? g.lineTo(px(x), py(ys[i])) : g.moveTo(px(x), py(ys[i]))));
  g.stroke();
  g.fillStyle = "#222"; g.fillText(o.title, m, 14);
  canvas.dataset.points = String(xs.length);
}

$("file").addEventListener("change", () => {
  state.file = $("file").files[0] || null;
  if (!state.file) return;
  state.settings = null;
  if (state.rawUrl) URL.revokeObjectURL(state.rawUrl);
  state.rawUrl = URL.createObjectURL(state.file);
  $("raw-audio").src = state.rawUrl;
  schedule({ predict: true });
});
$("amount").addEventListener("input", () => {
  $("amount-value").textContent = (+$("amount").value).toFixed(2);
  schedule({ predict: true });
});
$("model").addEventListener("change", () => schedule({ predict: true }));
$("format").addEventListener("change", () => schedule({ predict: false }));
for (const id of ["ab-raw", "ab-mix"]) $(id).addEventListener("change", applyAB);
$("play").addEventListener("click", () => {
  const raw = $("raw-audio"), mix = $("mix-audio");
  if (mix.paused) {
    raw.currentTime = mix.currentTime;
    raw.play(); mix.play();
    $("play").textContent = "pause";
  } else {
    raw.pause(); mix.pause();
    $("play").textContent = "play";
  }
});
loadLists();

// The diffgap playground: ranks a catalog for a typed text or a dropped audio file through the
// HTTP/JSON API (POST /v1/rank), plays the ranked entries (GET /v1/catalogs/{c}/entries/{id}/audio,
// fetched with the bearer token into a Blob URL: an <audio> element cannot send headers) and
// draws the catalog's gap picture (GET /v1/catalogs/{c}/gap, with the query's embedding from
// POST /v1/embed and its bridged embedding from POST /v1/bridge projected into it).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "diffgap.playground.token";
const DEFAULT_MODES = ["fused", "contrastive", "bridged", "reverse", "generative"];

const state = { info: null, audio: null, gaps: new Map(), blobs: new Map() };

class ApiError extends Error {}

async function api(path, body) {
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try {
      const e = (await r.json()).error;
      message = `${r.status} ${e.code}: ${e.message}`;
    } catch (_) { /* not JSON: keep the status */ }
    throw new ApiError(message);
  }
  return r;
}

const getJson = async (path) => (await api(path)).json();
const postJson = async (path, body) => (await api(path, body)).json();

function showError(e) {
  $("error").hidden = !e;
  $("error").textContent = e ? String(e.message || e) : "";
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

const model = () => state.info.models.find((m) => m.name === $("model").value);
const catalog = () => model().catalogs.find((c) => c.name === $("catalog").value);
const queryModality = () => (state.audio ? "audio" : "text");

async function connect() {
  localStorage.setItem(TOKEN_KEY, $("token").value.trim());
  showError(null);
  try {
    state.info = await getJson("/v1/info");
  } catch (e) {
    $("server").textContent = "not connected";
    showError(e);
    return;
  }
  const i = state.info;
  $("server").textContent = `diffgap ${i.version} on ${i.device}`;
  $("model").replaceChildren(...i.models.map((m) => option(m.name, `${m.name} (${m.space})`)));
  fillCatalogs();
}

function fillCatalogs() {
  const m = model();
  const usable = m.catalogs.filter((c) => c.modality !== queryModality());
  $("catalog").replaceChildren(
    ...usable.map((c) => option(c.name, `${c.name} (${c.entries} ${c.modality} entries)`)));
  if (!usable.length) {
    showError(`model ${m.name} serves no catalog of another modality than the ${queryModality()} query`);
  }
  fillModes();
}

// The modes of the direction query -> catalog, with their validation R@1 when the model card
// has the ladder (Info), best first as the card measured them.
function fillModes() {
  const c = catalog();
  const ladder = c && model().ladders.find((l) => l.direction === `${queryModality()}->${c.modality}`);
  const keep = $("mode").value;
  let options = DEFAULT_MODES.map((m) => option(m, m));
  if (ladder) {
    const rungs = [...ladder.rungs].sort((a, b) => b.r1 - a.r1);
    options = [option("validated_best", `validated_best (${ladder.validated_best})`)].concat(
      rungs.map((r) => option(r.mode, `${r.mode}: val. R@1 ${r.r1.toFixed(2)}${r.baseline ? " (baseline)" : ""}`)));
  }
  $("mode").replaceChildren(...options);
  if ([...$("mode").options].some((o) => o.value === keep)) $("mode").value = keep;
  else $("mode").value = ladder ? "validated_best" : "fused";
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

async function chooseAudio(file) {
  if (!file) return;
  state.audio = { name: file.name, b64: base64(new Uint8Array(await file.arrayBuffer())) };
  $("audio-name").textContent = `${file.name} (${Math.round(file.size / 1024)} KiB)`;
  $("audio-clear").hidden = false;
  $("query").value = "";
  $("query").disabled = true;
  fillCatalogs();
}

function clearAudio() {
  state.audio = null;
  $("audio-name").textContent = "";
  $("audio-clear").hidden = true;
  $("query").disabled = false;
  $("audio-file").value = "";
  fillCatalogs();
}

function rawQuery() {
  if (state.audio) return { audio: state.audio.b64 };
  const text = $("query").value.trim();
  if (!text) throw new Error("type a query or drop an audio file");
  return { text };
}

async function gapOf(name) {
  if (!state.gaps.has(name)) state.gaps.set(name, getJson(`/v1/catalogs/${encodeURIComponent(name)}/gap`));
  try {
    return await state.gaps.get(name);
  } catch (e) {
    state.gaps.delete(name);
    throw e;
  }
}

async function rank(event) {
  event.preventDefault();
  showError(null);
  if (!state.info) await connect();
  const c = catalog();
  if (!state.info || !c) return;
  let raw;
  try {
    raw = rawQuery();
  } catch (e) {
    showError(e);
    return;
  }
  const m = model().name;
  const qm = queryModality();
  $("rank").disabled = true;
  document.body.dataset.state = "ranking";
  const t0 = performance.now();
  const topK = Math.max(1, Math.min(100, Number($("top-k").value) || 8));
  const ranked = postJson("/v1/rank", {
    model: m, catalog: c.name, query_modality: qm, raw_query: raw, mode: $("mode").value, top_k: topK,
  });
  // The picture's query points: q, and B(q) when the model bridges the query's modality.
  const bridges = model().directions.includes(`${qm}->${c.modality}`);
  const query = postJson("/v1/embed", { model: m, inputs: [raw] });
  const bridged = bridges
    ? postJson("/v1/bridge", { model: m, items: [{ source_modality: qm, target_modality: c.modality, raw }] })
    : Promise.resolve(null);
  // Awaited below, after the ranking; a failed ranking leaves them unread.
  query.catch(() => {});
  bridged.catch(() => {});
  try {
    const r = await ranked;
    $("took").textContent = `(${r.results.length} of ${c.entries}, ${Math.round(performance.now() - t0)} ms)`;
    const gap = await gapOf(c.name);
    showResults(c.name, r.results, gap.files);
    const [q, b] = await Promise.all([query, bridged]);
    window.diffgapGap.draw($("gap"), $("gap-note"), gap, {
      modality: qm,
      query: q.embeddings[0].embedding,
      bridged: b ? b.embeddings[0] : null,
      ranked: r.results.map((x) => x.id),
    });
    document.body.dataset.state = "ranked";
  } catch (e) {
    document.body.dataset.state = "failed";
    showError(e);
  } finally {
    $("rank").disabled = false;
  }
}

const fmt = (x) => (x === undefined || x === null ? "" : x.toFixed(4));

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

const COMPONENTS = ["contrastive", "bridged", "reverse", "generative"];

// One row per candidate: its score, then each component score the mode computed (a component
// no candidate has, e.g. reverse under a fusion that weighs it 0, gets no column).
function showResults(catalogName, results, files) {
  const shown = COMPONENTS.filter((k) => results.some((x) => x[k] !== undefined));
  const head = document.createElement("tr");
  for (const h of ["#", "id", "score", ...shown, "sound"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  $("results").tHead.replaceChildren(head);
  const rows = results.map((x, i) => {
    const tr = document.createElement("tr");
    tr.className = "candidate";
    tr.append(cell(String(i + 1)), cell(x.id, "id"), cell(fmt(x.score), "score"),
      ...shown.map((k) => cell(fmt(x[k]), `num ${k}`)));
    const sound = cell("", "sound");
    if (files) {
      const play = document.createElement("button");
      play.type = "button";
      play.className = "play";
      play.textContent = "▶ play";
      play.addEventListener("click", () => playEntry(catalogName, x.id, sound, play));
      sound.append(play);
    } else {
      sound.textContent = "(not a file)";
      sound.className = "muted";
    }
    tr.append(sound);
    return tr;
  });
  $("results").tBodies[0].replaceChildren(...rows);
}

// Fetches the entry's file with the token, once, and plays it from a Blob URL.
async function playEntry(catalogName, id, where, button) {
  const key = `${catalogName}\n${id}`;
  try {
    button.disabled = true;
    if (!state.blobs.has(key)) {
      const path = `/v1/catalogs/${encodeURIComponent(catalogName)}/entries/${encodeURIComponent(id)}/audio`;
      const blob = await (await api(path)).blob();
      state.blobs.set(key, URL.createObjectURL(blob));
    }
    let audio = where.querySelector("audio");
    if (!audio) {
      audio = document.createElement("audio");
      audio.controls = true;
      audio.src = state.blobs.get(key);
      where.replaceChildren(audio);
    }
    for (const other of document.querySelectorAll("#results audio")) if (other !== audio) other.pause();
    await audio.play();
  } catch (e) {
    showError(e);
    button.disabled = false;
  }
}

function init() {
  $("token").value = localStorage.getItem(TOKEN_KEY) || "";
  $("connect").addEventListener("click", connect);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") connect(); });
  $("model").addEventListener("change", fillCatalogs);
  $("catalog").addEventListener("change", fillModes);
  $("query-form").addEventListener("submit", rank);
  $("audio-file").addEventListener("change", (e) => chooseAudio(e.target.files[0]));
  $("audio-clear").addEventListener("click", clearAudio);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    chooseAudio(e.dataTransfer.files[0]);
  });
  connect();
}

document.addEventListener("DOMContentLoaded", init);

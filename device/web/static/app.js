// coral-classifier web page: small helpers shared by the three pages (no framework).
"use strict";
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

async function api(path, body, raw) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"X-Coral-Web": "1", "Content-Type": raw ? "application/octet-stream" : "application/json"},
    body: raw ? body : JSON.stringify(body)};
  const r = await fetch(path, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function topk(list) {
  return "<table>" + (list || []).map((k) =>
    `<tr><td>${esc(k.label)}</td><td style="width:45%"><div class="bar" style="width:${Math.round(k.score * 100)}%"></div></td><td>${k.score.toFixed(3)}</td></tr>`).join("") + "</table>";
}

function nav(page) {
  document.querySelectorAll("header a").forEach((a) => { if (a.dataset.page === page) a.classList.add("on"); });
  api("/api/status").then((s) => { $("header .dev").textContent = `${s.device_id} · ${s.model.name} v${s.model.version} · ${s.backend}`; }).catch(() => {});
}

// -- live view ------------------------------------------------------------------------------
async function liveTick() {
  try {
    const l = await api("/api/live");
    $("#seq").textContent = l.seq === null ? "waiting for the first frame" : `frame #${l.seq}`;
    $("#seq").dataset.seq = l.seq;
    let html = topk(l.top_k);
    if (l.reason) html += `<p class="${l.accepted ? "ok" : "bad"}">${l.accepted ? "accepted" : "not accepted: " + esc(l.reason)}</p>`;
    for (const [name, top] of Object.entries(l.regions || {})) html += `<h2>${esc(name)}</h2>` + topk(top);
    $("#topk").innerHTML = html;
  } catch (e) { $("#seq").textContent = e.message; }
}
async function statusTick() {
  try {
    const s = await api("/api/status");
    const rows = [["state", s.state], ["fps", s.fps], ["frames", s.frames], ["events", s.events], ["camera", s.camera],
      ["uptime", Math.round(s.uptime_s) + " s"], ["outbox pending", s.outbox.pending], ["worker restarts", s.worker_restarts],
      ["capture", s.capture.running ? `${s.capture.left} left → ${s.capture.label}` : `saved ${s.capture.saved.capture}, doubtful ${s.capture.saved.doubtful}`],
      ["last error", s.last_error || "—"]];
    $("#status").innerHTML = "<table>" + rows.map(([k, v]) => `<tr><th>${k}</th><td>${esc(v)}</td></tr>`).join("") + "</table>";
    const e = await api("/api/events");
    const counts = Object.entries(e.counts).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`).join("");
    $("#counts").innerHTML = e.mode === "event" ? (counts ? `<table>${counts}</table>` : '<p class="muted">no events yet</p>')
      : '<p class="muted">decision.mode = "stream": a result per frame, no events</p>';
    $("#events").innerHTML = e.events.map((ev) => `<div class="event"><img src="/events/${encodeURIComponent(ev.event_id)}.jpg" alt="">
      <b>${esc(ev.label)}</b> ${ev.score.toFixed(2)}<br><span class="muted">${ev.frames} frames · ${new Date(ev.ts * 1000).toLocaleTimeString()}</span></div>`).join("");
  } catch (e) { /* shown on the next tick */ }
}
function startLive() {
  nav("live");
  liveTick(); statusTick();
  setInterval(liveTick, 500); setInterval(statusTick, 2000);
}

// -- upload ---------------------------------------------------------------------------------
async function classifyFile(file) {
  $("#preview").src = URL.createObjectURL(file);
  $("#answer").textContent = "classifying…";
  try {
    const r = await api("/api/classify?name=" + encodeURIComponent(file.name), file, true);
    $("#answer").innerHTML = `<span class="answer" id="label">${esc(r.label)}</span> ${r.score.toFixed(3)}
      <span class="${r.accepted ? "ok" : "bad"}" id="verdict">${r.accepted ? "accepted" : "not accepted: " + esc(r.reason)}</span>
      <p class="muted">${esc(r.model.name)} v${esc(r.model.version)} on ${esc(r.backend)} · ${r.latency_ms.inference.toFixed(1)} ms inference</p>` + topk(r.top_k);
    $("#json").textContent = JSON.stringify(r, null, 2);
  } catch (e) { $("#answer").innerHTML = `<span class="bad" id="label">${esc(e.message)}</span>`; }
}
function startUpload() {
  nav("upload");
  $("#file").addEventListener("change", (e) => { if (e.target.files[0]) classifyFile(e.target.files[0]); });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => e.preventDefault());
  drop.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) classifyFile(e.dataTransfer.files[0]); });
}

// -- labelling ------------------------------------------------------------------------------
const selected = new Set();
async function loadFrames() {
  const data = await api("/api/frames");
  const opts = new Set([...data.labels, ...data.frames.map((f) => f.label).filter((l) => l && !l.startsWith("_"))]);
  $("#labels").innerHTML = [...opts].map((l) => `<option value="${esc(l)}">`).join("");
  const sel = $("#filter");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const l of new Set(data.frames.map((f) => f.label).filter((l) => l))) {
    if (!have.has(l)) sel.add(new Option(`class ${l}`, l));
  }
  const filter = sel.value;
  const frames = data.frames.filter((f) => filter === "all" || (filter === "doubtful" ? f.source === "doubtful" : f.label === filter));
  $("#count").textContent = `${frames.length} frame(s)`;
  selected.clear();
  $("#frames").innerHTML = frames.map((f) => {
    const top = f.top_k[0] ? `${esc(f.top_k[0].label)} ${f.top_k[0].score.toFixed(2)}` : "";
    return `<div class="tile" data-id="${esc(f.id)}"><img loading="lazy" src="/frame?id=${encodeURIComponent(f.id)}" alt="">
      <div><b>${esc(f.label || "doubtful")}</b> ${esc(f.reason)}</div><div class="muted">model: ${top}</div></div>`;
  }).join("") || '<p class="muted">nothing captured yet: send cmd/capture, or turn on [capture] keep_doubtful</p>';
  document.querySelectorAll(".tile").forEach((t) => t.addEventListener("click", () => {
    t.classList.toggle("sel");
    if (t.classList.contains("sel")) selected.add(t.dataset.id); else selected.delete(t.dataset.id);
    $("#nsel").textContent = `${selected.size} selected`;
  }));
  $("#nsel").textContent = "0 selected";
}
async function act(action) {
  if (!selected.size) { $("#msg").textContent = "select frames first (click them)"; return; }
  const label = $("#label").value.trim();
  if (action === "label" && !label) { $("#msg").textContent = "type or pick a class"; return; }
  if (action === "delete" && !confirm(`delete ${selected.size} frame(s)?`)) return;
  try {
    const r = await api("/api/frames", {action, ids: [...selected], label});
    $("#msg").textContent = `${r.action}: ${r.ids.length} frame(s) done`;
  } catch (e) { $("#msg").textContent = e.message; }
  loadFrames();
}
async function capture() {
  try {
    const r = await api("/api/capture", {label: $("#clabel").value.trim() || "_unlabelled", frames: +$("#cframes").value, every: +$("#cevery").value});
    $("#msg").textContent = `capturing ${r.frames} frame(s) into ${r.label}`;
    setTimeout(loadFrames, Math.max(1500, r.frames * r.every * 1000 + 1000));
  } catch (e) { $("#msg").textContent = e.message; }
}
function startLabel() {
  nav("label");
  $("#filter").addEventListener("change", loadFrames);
  $("#all").addEventListener("click", () => document.querySelectorAll(".tile").forEach((t) => { t.classList.add("sel"); selected.add(t.dataset.id); $("#nsel").textContent = `${selected.size} selected`; }));
  $("#assign").addEventListener("click", () => act("label"));
  $("#reject").addEventListener("click", () => act("reject"));
  $("#delete").addEventListener("click", () => act("delete"));
  $("#capture").addEventListener("click", capture);
  loadFrames();
}

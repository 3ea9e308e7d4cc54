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

// -- the verdict: one vocabulary (accepted, refused, empty, unknown), shown large and coloured --
// What a label is worth: the answer's value and currency when the model gives them, else a
// label written "<amount>_<currency>" (50000_vnd → 50,000 VND), else the label itself.
function amount(label, r) {
  if (r && r.value != null && r.currency) return `${Number(r.value).toLocaleString("en-US")} ${r.currency}`;
  const m = /^(\d+)_([a-z]{3})$/i.exec(label || "");
  return m ? `${Number(m[1]).toLocaleString("en-US")} ${m[2].toUpperCase()}` : label;
}
// An answer without `verdict` (an older daemon's upload answer) is read from accepted/reason,
// as device/openset.py's Verdict.verdict does.
function verdictOf(r) {
  if (r.verdict) return r.verdict;
  if (r.accepted) return "accepted";
  if (r.reason === "refused" || r.reason === "not_in_accept_list") return "refused";
  return r.reason === "background" ? "empty" : "unknown";
}
const WORDS = {accepted: "✔ ACCEPTED", refused: "✖ REFUSED", unknown: "⚠ NOT ACCEPTED", empty: "EMPTY SLOT"};
// r: {verdict?, explanation?, reason, accepted, label, score, value?, currency?}
function verdictHtml(r) {
  const v = verdictOf(r);
  const why = r.explanation || String(r.reason || "").replace(/_/g, " ");
  const guess = r.label ? `${esc(r.label)} ${Number(r.score).toFixed(2)}` : "";
  let what = "", sub = "";
  if (v === "accepted") { what = esc(amount(r.label, r)); sub = guess; }
  else if (v === "refused") { what = `${esc(why)}: hand it back`; sub = `recognised as ${guess}`; }
  else if (v === "empty") { what = esc(why); }
  else { what = esc(why); sub = guess && `best guess ${guess}`; }
  return `<div class="verdict v-${esc(v)}" id="verdict" data-verdict="${esc(v)}"><span class="vword">${WORDS[v] || esc(v)}</span>` +
    `<span class="vwhat">${what}</span>${sub ? `<span class="vsub">${sub}</span>` : ""}</div>`;
}

// -- the header: page links, the daemon, its MQTT connection ----------------------------------
function showConn(mqtt) {
  const c = $("#conn");
  if (!c) return;
  const up = mqtt ? mqtt.connected : null;
  c.className = "conn" + (up === true ? " up" : up === false ? " down" : "");
  c.dataset.state = up === true ? "connected" : up === false ? "disconnected" : "unknown";
  c.textContent = up === true ? "MQTT connected" : up === false ? "MQTT disconnected" : "MQTT ?";
  c.title = mqtt && mqtt.broker ? `broker ${mqtt.broker}` : "the daemon's MQTT connection";
}
function connTick() {
  api("/api/live").then((l) => showConn(l.mqtt)).catch(() => showConn({connected: null}));
}
function nav(page) {
  document.querySelectorAll("header a").forEach((a) => { if (a.dataset.page === page) a.classList.add("on"); });
  api("/api/status").then((s) => { $("header .dev").textContent = `${s.device_id} · ${s.model.name} v${s.model.version} · ${s.backend}`; }).catch(() => {});
  if (page !== "live") { connTick(); setInterval(connTick, 3000); }  // the live page polls /api/live anyway
}

// -- live view ------------------------------------------------------------------------------
async function liveTick() {
  try {
    const l = await api("/api/live");
    showConn(l.mqtt);
    $("#seq").textContent = l.seq === null ? "waiting for the first frame" : `frame #${l.seq}`;
    $("#seq").dataset.seq = l.seq;
    const top = (l.top_k || [])[0];
    $("#now").innerHTML = l.verdict ? verdictHtml({...l, label: top && top.label, score: top && top.score}) : "";
    let html = topk(l.top_k);
    for (const [name, t] of Object.entries(l.regions || {})) html += `<h2>${esc(name)}</h2>` + topk(t);
    $("#topk").innerHTML = html;
  } catch (e) { $("#seq").textContent = e.message; showConn({connected: null}); }
}
function eventHtml(ev) {
  const v = ev.verdict || (ev.label === "unknown" ? "unknown" : "accepted");
  const what = v === "accepted" ? esc(amount(ev.label, ev)) : esc(ev.label) + (ev.guess ? ` (best guess ${esc(ev.guess)} ${Number(ev.guess_score).toFixed(2)})` : "");
  return `<div class="event v-${esc(v)}" data-verdict="${esc(v)}"><img src="/events/${encodeURIComponent(ev.event_id)}.jpg" alt="">
    <span class="tag">${WORDS[v] || esc(v)}</span><br><b>${what}</b> ${ev.score.toFixed(2)}<br><span class="muted">${ev.frames} frames · ${new Date(ev.ts * 1000).toLocaleTimeString()}</span></div>`;
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
    $("#events").innerHTML = e.events.map(eventHtml).join("");
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
    $("#answer").innerHTML = verdictHtml(r) +
      `<p class="muted">${esc(r.model.name)} v${esc(r.model.version)} on ${esc(r.backend)} · ${r.latency_ms.inference.toFixed(1)} ms inference</p>` + topk(r.top_k);
    $("#json").textContent = JSON.stringify(r, null, 2);
  } catch (e) { $("#answer").innerHTML = `<span class="bad" id="error">${esc(e.message)}</span>`; }
}
function startUpload() {
  nav("upload");
  $("#file").addEventListener("change", (e) => { if (e.target.files[0]) classifyFile(e.target.files[0]); });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => e.preventDefault());
  drop.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) classifyFile(e.dataTransfer.files[0]); });
}

// -- labelling ------------------------------------------------------------------------------
const CONFIDENT = 0.9;  // a model this sure is worth a second look before a person contradicts it
const NEW = "*new*";  // the class list's "new class…" entry (no class name holds a "*")
const selected = new Set();
const frameInfo = new Map();
let modelClasses = [], otherClasses = [];

function fillClasses(data) {
  modelClasses = data.labels;
  otherClasses = [...new Set(data.frames.map((f) => f.label).filter((l) => l && !l.startsWith("_") && !modelClasses.includes(l)))].sort();
  const sel = $("#label"), keep = sel.value;
  const opts = (ls) => ls.map((l) => `<option value="${esc(l)}">${esc(l)}</option>`).join("");
  sel.innerHTML = '<option value="">— pick a class —</option>' + `<optgroup label="the model's classes">${opts(modelClasses)}</optgroup>` +
    (otherClasses.length ? `<optgroup label="other classes in the dataset">${opts(otherClasses)}</optgroup>` : "") +
    `<option value="${NEW}">＋ new class…</option>`;
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  const cap = $("#clabel"), ckeep = cap.value;
  cap.innerHTML = '<option value="_unlabelled">_unlabelled</option>' + opts([...modelClasses, ...otherClasses]);
  if ([...cap.options].some((o) => o.value === ckeep)) cap.value = ckeep;
}
async function loadFrames() {
  const data = await api("/api/frames");
  fillClasses(data);
  const sel = $("#filter");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const l of new Set(data.frames.map((f) => f.label).filter((l) => l))) {
    if (!have.has(l)) sel.add(new Option(`class ${l}`, l));
  }
  const filter = sel.value;
  const frames = data.frames.filter((f) => filter === "all" || (filter === "doubtful" ? f.source === "doubtful" : f.label === filter));
  $("#count").textContent = `${frames.length} frame(s)`;
  selected.clear();
  frameInfo.clear();
  frames.forEach((f) => frameInfo.set(f.id, f));
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
// Edit distance, to say which existing class a new name looks like (a typo, most likely).
function distance(a, b) {
  let prev = Array.from({length: b.length + 1}, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}
// Why a person should look twice before labelling the selected frames `label` ([] when fine).
function warnings(label, isNew) {
  const out = [];
  if (isNew) {
    const dist = [...modelClasses, ...otherClasses].map((c) => [distance(c.toLowerCase(), label.toLowerCase()), c]);
    const best = Math.min(...dist.map(([d]) => d));
    const near = best <= 2 ? dist.filter(([d]) => d === best).map(([, c]) => c) : [];
    out.push(`“${esc(label)}” is a new class: it is not one of the model's classes (${modelClasses.map(esc).join(", ")}); ` +
      "its folder becomes a new class at the next training." + (near.length ? ` It looks like ${near.map((c) => `<b>${esc(c)}</b>`).join(", ")}: a typo?` : ""));
  }
  const against = [...selected].map((id) => frameInfo.get(id)).filter((f) => f && f.top_k[0] &&
    f.top_k[0].score >= CONFIDENT && f.top_k[0].label !== label);
  if (against.length) {
    const seen = [...new Set(against.map((f) => `${f.top_k[0].label} ${f.top_k[0].score.toFixed(2)}`))].slice(0, 4);
    out.push(`The model was confident ${against.length} of the ${selected.size} selected frame(s) show something else: ` +
      `<b>${seen.map(esc).join(", ")}</b>. Label them <b>${esc(label)}</b> anyway?`);
  }
  return out;
}
let pending = null;  // the labelling waiting for the confirm step
function askConfirm(lines, then) {
  pending = then;
  $("#confirm-msg").innerHTML = lines.join("<br>");
  $("#confirm").hidden = false;
  $("#confirm-yes").focus();
}
function closeConfirm() { pending = null; $("#confirm").hidden = true; }
async function send(action, label) {
  closeConfirm();
  try {
    const r = await api("/api/frames", {action, ids: [...selected], label});
    $("#msg").textContent = `${r.action === "new_class" ? "label" : r.action}: ${r.ids.length} frame(s) done`;
    if (action === "new_class") { $("#newlabel").value = ""; $("#newlabel").hidden = true; $("#label").value = label; }
  } catch (e) { $("#msg").textContent = e.message; }
  loadFrames();
}
async function act(action) {
  closeConfirm();
  if (!selected.size) { $("#msg").textContent = "select frames first (click them)"; return; }
  if (action === "delete" && !confirm(`delete ${selected.size} frame(s)?`)) return;
  if (action !== "label") return send(action, "");
  let label = $("#label").value, isNew = false;
  if (label === NEW) {
    label = $("#newlabel").value.trim();
    if (!label) { $("#msg").textContent = "type the new class's name"; $("#newlabel").focus(); return; }
    isNew = !modelClasses.includes(label) && !otherClasses.includes(label);
  }
  if (!label) { $("#msg").textContent = "pick a class"; return; }
  const why = warnings(label, isNew);
  const go = () => send(isNew ? "new_class" : "label", label);
  if (why.length) askConfirm(why, go); else go();
}
async function capture() {
  try {
    const r = await api("/api/capture", {label: $("#clabel").value || "_unlabelled", frames: +$("#cframes").value, every: +$("#cevery").value});
    $("#msg").textContent = `capturing ${r.frames} frame(s) into ${r.label}`;
    setTimeout(loadFrames, Math.max(1500, r.frames * r.every * 1000 + 1000));
  } catch (e) { $("#msg").textContent = e.message; }
}
function startLabel() {
  nav("label");
  $("#filter").addEventListener("change", loadFrames);
  $("#label").addEventListener("change", () => { $("#newlabel").hidden = $("#label").value !== NEW; if (!$("#newlabel").hidden) $("#newlabel").focus(); });
  $("#all").addEventListener("click", () => document.querySelectorAll(".tile").forEach((t) => { t.classList.add("sel"); selected.add(t.dataset.id); $("#nsel").textContent = `${selected.size} selected`; }));
  $("#assign").addEventListener("click", () => act("label"));
  $("#reject").addEventListener("click", () => act("reject"));
  $("#delete").addEventListener("click", () => act("delete"));
  $("#confirm-yes").addEventListener("click", () => { if (pending) pending(); });
  $("#confirm-no").addEventListener("click", () => { closeConfirm(); $("#msg").textContent = "not labelled"; });
  $("#capture").addEventListener("click", capture);
  loadFrames();
}

// Encore listening room: plain JS, no framework, nothing from a CDN.
// Reads go to the ranker (this page's origin); uploads, audio and events go to the embedder directly (CORS).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { embedder: "", user: null, maxK: 100, query: "" };
const TIMEOUT_MS = 8000; // every call gives up after this (an upload gets longer): nothing hangs
const UPLOAD_TIMEOUT_MS = 180000;
const WRITE_TIMEOUT_MS = 20000; // an event batch is fsynced to the offline log: slower than a read on a busy host

class ApiError extends Error {}

// fetch with a deadline; an error answer becomes the API's own message ({"detail": {"code", "message"}}).
async function api(url, options = {}, timeoutMs = TIMEOUT_MS) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  const where = url.startsWith(state.embedder) && state.embedder ? "embedder" : "ranker";
  let response;
  try {
    response = await fetch(url, { ...options, signal: abort.signal });
  } catch (err) {
    const why = err.name === "AbortError" ? `no answer within ${timeoutMs / 1000} s` : "cannot be reached";
    throw new ApiError(`The ${where} ${why} (${url.split("?")[0]}).`);
  } finally {
    clearTimeout(timer);
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const d = body && body.detail;
    const message = d && d.message ? `${d.code}: ${d.message}` : `HTTP ${response.status}`;
    throw new ApiError(`The ${where} answered ${response.status} ${message}`);
  }
  return body;
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err instanceof ApiError ? err.message : `Unexpected: ${err}`;
  box.hidden = false;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// The free-text query steers the list (GET /recommend?q=, docs/listening_room.md); empty: no q at all.
const queryParam = () => (state.query ? `&q=${encodeURIComponent(state.query)}` : "");
const tagList = (tags) => el("div", { class: "tags" }, ...(tags || []).map((t) => el("span", { class: "tag" }, t)));
const key = () => $("api-key").value.trim();
const keyHeaders = () => (key() ? { "X-API-Key": key() } : {});

// --- listener ------------------------------------------------------------------------------------------

async function showUser(userId) {
  state.user = userId;
  showError(null);
  // The address names the listener (and the words steering), so a list can be reloaded or shared.
  const shown = new URLSearchParams({ user_id: userId });
  if (state.query) shown.set("q", state.query);
  window.history.replaceState(null, "", `?${shown}`);  // window.: `history` below is this listener's plays
  $("recs-meta").textContent = `for ${userId}: loading…`;
  const [recs, history] = await Promise.allSettled([
    api(`/recommend?user_id=${encodeURIComponent(userId)}&k=10${queryParam()}`),
    api(`/ui/history?user_id=${encodeURIComponent(userId)}`),
  ]);
  if (recs.status === "fulfilled") renderRecs(recs.value);
  else { $("recs").replaceChildren(); $("recs-meta").textContent = ""; showError(recs.reason); }
  if (history.status === "fulfilled") renderHistory(history.value);
  else { $("history").replaceChildren(); $("history-meta").textContent = "(unavailable)"; }
}

function renderRecs(answer) {
  $("recs-meta").textContent = `for ${answer.user_id} · ${answer.model} · ${answer.candidate_source}`
    + (answer.query ? ` · steered by “${answer.query}”` : "");
  const banner = $("degraded");
  banner.hidden = !answer.degraded;
  banner.textContent = answer.degraded ? `Degraded answer: ${answer.degraded_reason}` : "";
  $("recs").replaceChildren(...answer.items.map((item) => el("li", { "data-track": item.track_id },
    el("div", { class: "head" },
      el("span", { class: "rank" }, `${item.rank}.`),
      el("span", { class: "id" }, item.track_id),
      item.cold ? el("span", { class: "badge", title: "a new track (uploaded, or not yet trained on), found by its sound" }, "new") : null,
      el("span", { class: "score" }, `score ${item.score.toFixed(3)}`),
      item.query_match !== null && item.query_match !== undefined
        ? el("span", { class: "meta match", title: "how well its tags match your words (cosine)" },
          `match ${item.query_match.toFixed(2)}`)
        : null,
      item.genre ? el("span", { class: "meta" }, item.genre) : null),
    tagList(item.tags),
    el("p", { class: "reason" }, item.reason),
    el("div", { class: "actions" },
      el("button", { class: "small", type: "button", onclick: () => play(item.track_id) }, "▶ play"),
      ...["like", "skip", "dislike"].map((type) =>
        el("button", { class: "small", type: "button", "data-event": type, onclick: () => rate(item.track_id, type) },
          type))))));
}

function renderHistory(history) {
  $("history-meta").textContent = history.known_user
    ? `(${history.tracks.length} shown)`
    : "(unknown to the bundle: no history, so the list above is the most played tracks)";
  $("history").replaceChildren(...history.tracks.map((t) => el("li", {},
    el("div", { class: "head" }, el("span", { class: "id" }, t.track_id),
      t.genre ? el("span", { class: "meta" }, t.genre) : null,
      el("button", { class: "small", type: "button", onclick: () => play(t.track_id) }, "▶")),
    tagList(t.tags))));
}

// like / skip / dislike: one event to the embedder's POST /events, then the list again.
async function rate(trackId, type) {
  showError(null);
  if (!state.user) return;
  const id = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  const event = { id, user_id: state.user, track_id: trackId, type, ms: 0, ts: new Date().toISOString() };
  try {
    const answer = await api(`${state.embedder}/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...keyHeaders() },
      body: JSON.stringify({ events: [event] }),
    }, WRITE_TIMEOUT_MS);
    $("event-answer").textContent = `${type} ${trackId}: ${JSON.stringify(answer)}`;
    await showUser(state.user);
  } catch (err) { showError(err); }
}

// --- listening -----------------------------------------------------------------------------------------

// Audio is not public: the page asks for a short-lived signed link with the key, and the player uses it.
async function play(trackId) {
  showError(null);
  if (!key()) { showError(new ApiError("Type the API key (right) to listen: audio is not public.")); return; }
  try {
    const link = await api(`${state.embedder}/tracks/${encodeURIComponent(trackId)}/audio-link`, {
      method: "POST", headers: keyHeaders(),
    });
    const player = $("player");
    player.src = state.embedder + link.url;
    player.hidden = false;
    $("now-playing").textContent = `Playing ${trackId}`;
    await player.play().catch(() => {}); // autoplay may be refused; the controls still work
  } catch (err) { showError(err); }
}

// --- upload --------------------------------------------------------------------------------------------

async function upload(file) {
  showError(null);
  const out = $("upload-result");
  out.replaceChildren(el("p", { class: "note" }, `Uploading ${file.name} (${(file.size / 2 ** 20).toFixed(1)} MiB)…`));
  const form = new FormData();
  form.append("file", file, file.name);
  let answer;
  try {
    answer = await api(`${state.embedder}/embed`, { method: "POST", headers: keyHeaders(), body: form },
      UPLOAD_TIMEOUT_MS);
  } catch (err) { out.replaceChildren(); showError(err); return; }
  const tags = Object.entries(answer.tags || {}).map(([head, list]) =>
    [el("dt", {}, `tags (${head})`), el("dd", {}, tagList(list))]).flat();
  const list = el("dl", {},
    el("dt", {}, "track id"), el("dd", { class: "id", id: "upload-id" }, answer.track_id),
    ...tags,
    el("dt", {}, "typicality"), el("dd", {}, `${answer.typicality} (1 typical of the catalog, 0 beyond all of it)`),
    el("dt", {}, "encoded"), el("dd", {}, `${answer.seconds_used} s in ${Math.round(answer.processing_ms)} ms`
      + (answer.note ? ` · ${answer.note}` : "")));
  const similar = el("ol", { class: "tracks compact", id: "similar" });
  const placement = el("p", { id: "placement", class: "note" });
  out.replaceChildren(list, el("h3", {}, "Closest catalog tracks"), similar, placement,
    el("div", { class: "actions" },
      el("button", { class: "small", type: "button", onclick: () => play(answer.track_id) }, "▶ play"),
      el("button", { class: "small", type: "button", onclick: () => remove(answer.track_id) }, "delete")));
  try {
    const near = await api(`/ui/similar?track_id=${encodeURIComponent(answer.track_id)}`);
    similar.replaceChildren(...near.similar.map((s) => el("li", {},
      el("span", { class: "id" }, s.track_id), ` · similarity ${s.score.toFixed(2)}`)));
  } catch (err) { similar.replaceChildren(el("li", { class: "note" }, err.message)); }
  await placeUpload(answer.track_id, placement);
}

// Does the upload reach the chosen listener's list? Asks for the longest list the ranker gives.
async function placeUpload(trackId, out) {
  if (!state.user) { out.textContent = "Pick a listener to see whether the upload reaches their list."; return; }
  try {
    const recs = await api(`/recommend?user_id=${encodeURIComponent(state.user)}&k=${state.maxK}`);
    const hit = recs.items.find((i) => i.track_id === trackId);
    out.textContent = hit
      ? `In ${state.user}'s list at rank ${hit.rank} of ${recs.items.length} (score ${hit.score.toFixed(3)}).`
      : `Not in ${state.user}'s top ${recs.items.length}.`;
    await showUser(state.user);
  } catch (err) { out.textContent = err.message; }
}

async function remove(trackId) {
  showError(null);
  try {
    const answer = await api(`${state.embedder}/tracks/${encodeURIComponent(trackId)}`, {
      method: "DELETE", headers: keyHeaders(),
    });
    $("upload-result").replaceChildren(el("p", { class: "note" }, `Deleted ${trackId}: ${JSON.stringify(answer)}`));
    if (state.user) await showUser(state.user);
  } catch (err) { showError(err); }
}

function wireDrop() {
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, (e) => {
    e.preventDefault(); drop.classList.add("over");
  });
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
}

// --- start ---------------------------------------------------------------------------------------------

async function status() {
  const check = async (name, url) => {
    try { await api(`${url}/readyz`, {}, 3000); return `${name} ready`; } catch { return `${name} NOT ready`; }
  };
  const parts = await Promise.all([check("ranker", ""), check("embedder", state.embedder)]);
  $("status").textContent = parts.join(" · ");
}

async function start() {
  $("api-key").value = sessionStorage.getItem("encore-key") || "";
  $("api-key").addEventListener("input", () => sessionStorage.setItem("encore-key", key()));
  wireDrop();
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const typed = $("user-id").value.trim();
    showUser(typed || $("demo-users").value);
  });
  $("query-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.query = $("query").value.trim();
    if (state.user) showUser(state.user);
  });
  $("clear-query").addEventListener("click", () => {
    $("query").value = ""; state.query = "";
    if (state.user) showUser(state.user);
  });
  $("demo-users").addEventListener("change", () => { $("user-id").value = ""; showUser($("demo-users").value); });
  const asked = new URLSearchParams(location.search);  // ?user_id=...&q=...: the listener and words to show first
  state.query = (asked.get("q") || "").trim();
  $("query").value = state.query;
  try {
    const config = await api("/ui/config");
    state.embedder = config.embedder_url || `${location.protocol}//${location.hostname}:8002`;
    state.maxK = config.max_k;
  } catch (err) { showError(err); state.embedder = `${location.protocol}//${location.hostname}:8002`; }
  $("embedder-docs").href = `${state.embedder}/docs`;
  status();
  try {
    const users = await api("/ui/users");
    $("demo-users").replaceChildren(...users.users.map((u) => el("option", { value: u }, u)));
    $("demo-users").setAttribute("aria-label", `${users.n_users} users in bundle ${users.bundle_id}`);
    const wanted = (asked.get("user_id") || "").trim();
    if (wanted && users.users.includes(wanted)) $("demo-users").value = wanted;
    else if (wanted) $("user-id").value = wanted;
    if (wanted || users.users.length) await showUser(wanted || users.users[0]);
  } catch (err) { showError(err); }
}

start();

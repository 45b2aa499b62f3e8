// The Agents Bar dashboard: log in, then poll GET /api/v1/dashboard and draw what it returns.
//
// The access token lives in sessionStorage (this tab only, gone when it closes) and is sent as
// "Authorization: Bearer", never as a cookie: a cookie would ride along on requests other sites
// make from the user's browser (CSRF); a header has to be written by this script. Everything the
// server returns is put on the page with textContent or SVG attributes, never parsed as HTML.
"use strict";

(function () {
  const API = "/api/v1";
  const TOKEN_KEY = "agents-bar-token";
  const POLL_MS = 1500;
  const REQUEST_TIMEOUT_MS = 5000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  let selected = null;      // the agent whose details are shown (null: the server's first)
  let timer = null;
  let lastUpdate = null;    // Date.now() of the last good answer
  let generation = 0;       // bumped at each login/logout, so that a stale poll's answer is dropped

  const $ = (id) => document.getElementById(id);

  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function showLogin(message) {
    stopPolling();
    $("board").hidden = true;
    $("logout").hidden = true;
    $("whoami").textContent = "";
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("password").value = "";
    ($("username").value ? $("password") : $("username")).focus();
  }

  function showBoard() {
    $("login").hidden = true;
    $("board").hidden = false;
    $("logout").hidden = false;
  }

  function stopPolling() {
    generation += 1;
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  }

  async function fetchWithTimeout(url, options) {
    const controller = new AbortController();
    const t = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      return await fetch(url, Object.assign({ signal: controller.signal, cache: "no-store" }, options));
    } finally {
      clearTimeout(t);
    }
  }

  async function detailOf(resp) {
    try {
      const doc = await resp.json();
      if (doc && typeof doc.detail === "string") return doc.detail;
    } catch (e) { /* not JSON: a proxy's page */ }
    return "HTTP " + resp.status;
  }

  async function login(event) {
    event.preventDefault();
    const body = new URLSearchParams({ username: $("username").value, password: $("password").value });
    $("login-submit").disabled = true;
    $("login-error").textContent = "";
    try {
      const resp = await fetchWithTimeout(API + "/login/access-token", { method: "POST", body: body });
      if (!resp.ok) {
        $("login-error").textContent = await detailOf(resp);
        return;
      }
      const doc = await resp.json();
      sessionStorage.setItem(TOKEN_KEY, doc.access_token);
      start();
    } catch (e) {
      $("login-error").textContent = "cannot reach the server: " + e.message;
    } finally {
      $("login-submit").disabled = false;
    }
  }

  function logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    setStatus("idle", "logged out");
    showLogin("");
  }

  function start() {
    stopPolling();
    showBoard();
    setStatus("connecting", "connecting…");
    poll(generation);
  }

  async function poll(gen) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      showLogin("");
      return;
    }
    const url = API + "/dashboard" + (selected ? "?agent=" + encodeURIComponent(selected) : "");
    try {
      const resp = await fetchWithTimeout(url, { headers: { Authorization: "Bearer " + token } });
      if (gen !== generation) return;
      if (resp.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        const detail = await detailOf(resp);
        setStatus("error", "not logged in: " + detail);
        showLogin(detail);
        return;
      }
      if (resp.status === 404 && selected) {
        selected = null;  // the agent shown was deleted: show the first one instead, at once
        poll(gen);
        return;
      }
      if (!resp.ok) throw new Error(await detailOf(resp));
      const doc = await resp.json();
      if (gen !== generation) return;
      render(doc);
      lastUpdate = Date.now();
      setStatus("live", "live · updated " + new Date(lastUpdate).toLocaleTimeString());
    } catch (e) {
      if (gen !== generation) return;
      const reason = e.name === "AbortError" ? "no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s" : e.message;
      const since = lastUpdate === null ? "no data yet" : "last update " + Math.round((Date.now() - lastUpdate) / 1000) + " s ago";
      setStatus("error", "error: cannot get data from the server (" + reason + "); " + since);
    }
    timer = setTimeout(() => poll(gen), POLL_MS);
  }

  // -- rendering -------------------------------------------------------------------------------

  const fmtInt = (n) => Number(n).toLocaleString("en-US");
  const fmtRate = (r) => (r === null || r === undefined ? "–" : r >= 100 ? fmtInt(Math.round(r)) : r.toFixed(1));

  function cell(row, text, field, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (field) td.dataset.field = field;
    if (numeric) td.className = "num";
    row.appendChild(td);
    return td;
  }

  function render(doc) {
    $("whoami").textContent = doc.user;
    const tbody = $("agents").tBodies[0];
    tbody.replaceChildren();
    const shown = doc.agent ? doc.agent.name : null;
    for (const a of doc.agents) {
      const tr = document.createElement("tr");
      tr.dataset.agent = a.name;
      if (a.name === shown) tr.className = "selected";
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "pick";
      pick.textContent = a.name;
      pick.addEventListener("click", () => { selected = a.name; stopPolling(); poll(generation); });
      cell(tr, "", "name").appendChild(pick);
      cell(tr, a.model, "model");
      cell(tr, fmtInt(a.steps_received), "steps_received", true);
      cell(tr, fmtInt(a.steps_learned), "steps_learned", true);
      cell(tr, fmtInt(Math.max(a.steps_received - a.steps_learned, 0)), "backlog", true);
      cell(tr, fmtRate(a.ingest_rate), "ingest_rate", true);
      cell(tr, fmtRate(a.learn_rate), "learn_rate", true);
      cell(tr, a.learner + (a.is_active ? "" : " (inactive)"), "learner");
      cell(tr, fmtInt(a.learn_errors), "learn_errors", true);
      tbody.appendChild(tr);
    }
    $("no-agents").hidden = doc.agents.length > 0;
    renderDetail(doc.agent, doc.server_time);
  }

  function ago(seconds) {
    if (seconds < 1) return "just now";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  function renderDetail(d, now) {
    $("detail").hidden = !d;
    if (!d) return;
    $("detail-title").textContent = d.name;
    const tbody = $("producers").tBodies[0];
    tbody.replaceChildren();
    for (const p of d.producers) {
      const tr = document.createElement("tr");
      tr.dataset.producer = p.producer_id;
      cell(tr, p.producer_id, "producer_id");
      cell(tr, fmtInt(p.acked_seq), "acked_seq", true);
      // Relative to the server's clock, so that a skewed browser clock does not matter.
      cell(tr, p.last_seen === null ? "before this server version" : ago(now - p.last_seen), "last_seen");
      tbody.appendChild(tr);
    }
    $("producer-count").textContent = d.producer_count > d.producers.length
      ? "(" + d.producers.length + " latest of " + d.producer_count + ")" : "(" + d.producer_count + ")";
    const loss = d.loss.names.map((name, i) => ({
      name: name, points: d.loss.points.filter((p) => p[i + 1] !== null).map((p) => [p[0], p[i + 1]]),
    }));
    drawChart($("loss-chart"), loss, now);
    $("loss-empty").hidden = d.loss.points.length > 0;
    drawChart($("return-chart"), d.returns.length ? [{ name: "return", points: d.returns }] : [], now);
    $("return-empty").hidden = d.returns.length > 0;
    $("episodes").textContent = d.episodes ? "(" + fmtInt(d.episodes) + " episodes)" : "";
  }

  function svg(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function fmtAxis(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return Number(v.toPrecision(3)).toString();
  }

  // A line per series over time; x runs from the first sample to the server's "now".
  function drawChart(el, series, now) {
    el.replaceChildren();
    const W = 600, H = 220, L = 52, R = 10, T = 22, B = 22;
    const all = series.flatMap((s) => s.points);
    if (all.length === 0) return;
    let t0 = Math.min(...all.map((p) => p[0]));
    const t1 = Math.max(now, ...all.map((p) => p[0]));
    if (t1 - t0 < 1) t0 = t1 - 1;
    let lo = Math.min(...all.map((p) => p[1]));
    let hi = Math.max(...all.map((p) => p[1]));
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    el.appendChild(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    el.appendChild(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    el.appendChild(svg("text", { x: L - 4, y: T + 4, "text-anchor": "end" }, fmtAxis(hi)));
    el.appendChild(svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, fmtAxis(lo)));
    el.appendChild(svg("text", { x: L, y: H - 6 }, "-" + ago(t1 - t0).replace(" ago", "")));
    el.appendChild(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "now"));
    series.forEach((s, i) => {
      const cls = "s" + (i % 4);
      const pts = s.points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
      el.appendChild(svg("polyline", { class: cls, points: pts, "data-series": s.name }));
      const last = s.points[s.points.length - 1];
      el.appendChild(svg("text", { class: cls, x: L + 8 + i * 130, y: 14 }, s.name + " " + fmtAxis(last[1])));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    if (sessionStorage.getItem(TOKEN_KEY)) start();
    else showLogin("");
  });
})();

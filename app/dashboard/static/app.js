// keypool dashboard: polls the admin API and draws everything with DOM nodes and inline SVG.
// Data is only ever written with textContent / setAttribute, never as HTML.
"use strict";

const TOKEN_KEY = "keypool.adminToken";
const REFRESH_MS = 4000;
const SERIES_MINUTES = { "5m": 30, "1h": 60, "24h": 1440 }; // minutes the latency chart spans
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let timer = null;
let providersSeen = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return value.toLocaleString(undefined, { maximumFractionDigits: digits });
  return String(value);
}

const pct = (value) => (value === null || value === undefined ? "–" : (value * 100).toFixed(1) + " %");

function table(headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", { text: h })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function facts(target, pairs) {
  target.replaceChildren(
    ...pairs.map(([label, value, id]) =>
      el("div", {}, el("dt", { text: label }), el("dd", { text: value, "data-fact": id || label }))
    )
  );
}

function notice(message) {
  const box = $("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 || response.status === 403) logout(error.message || "admin token refused");
    throw new ApiError(response.status, error.type || "http_" + response.status, error.message || response.statusText);
  }
  return data;
}

// ---- rendering -------------------------------------------------------------------------------

function renderHealth(data) {
  const health = data.health;
  const badge = $("health-badge");
  badge.textContent = health.status;
  badge.dataset.status = health.status;
  $("health-message").textContent = health.message;
  const cap = health.estimatedCapacity || {};
  facts($("health-facts"), [
    ["active keys", `${health.activeKeys} / ${health.totalKeys}`, "active"],
    ["requests / day", fmt(cap.requestsPerDay)],
    ["concurrent users", fmt(cap.concurrentUsers)],
    ["daily users", fmt(cap.dailyUsers)],
  ]);
  renderKeys(data.providers);
  renderLoad(data.providers);
  renderGroups(data.keyGroupStats || []);
}

function keyState(key) {
  return el("span", { class: "badge state", "data-state": key.state, text: key.state });
}

function keyActions(provider, key) {
  const disabled = key.state === "disabled";
  const toggle = el("button", {
    type: "button",
    class: "secondary",
    "data-action": disabled ? "enable" : "disable",
    text: disabled ? "Enable" : "Disable",
    onclick: () => act("POST", `/api/admin/api-keys/${provider}/${key.key_index}/${disabled ? "enable" : "disable"}`),
  });
  const remove = el("button", {
    type: "button",
    class: "danger",
    "data-action": "delete",
    text: "Delete",
    title: "remove a vault key",
    onclick: () => {
      if (confirm(`Delete key ${key.fingerprint}?`)) act("DELETE", `/api/admin/api-keys/${provider}/${key.key_index}`);
    },
  });
  return el("td", { class: "actions" }, toggle, remove);
}

function renderKeys(providers) {
  providersSeen = providers.map((p) => p.name);
  const select = $("vault-provider");
  if (select.options.length !== providersSeen.length) {
    select.replaceChildren(...providersSeen.map((name) => el("option", { value: name, text: name })));
  }
  $("providers").replaceChildren(
    ...providers.map((provider) => {
      const rows = provider.keys.map((key) =>
        el(
          "tr",
          { "data-key": `${provider.name}:${key.key_index}` },
          el("td", { text: key.key_index }),
          el("td", { text: key.fingerprint }),
          el("td", {}, keyState(key)),
          el("td", { text: key.cooldown_until ? new Date(key.cooldown_until).toLocaleTimeString() : "–" }),
          el("td", { text: fmt(key.in_flight) }),
          el("td", { text: fmt(key.requests) }),
          el("td", { text: fmt(key.errors) }),
          el("td", { text: key.source || "env" }),
          keyActions(provider.name, key)
        )
      );
      const title = el(
        "h3",
        {},
        `${provider.name} `,
        el("span", { class: "muted", text: `(${provider.default_model}) circuit ` }),
        el("span", { class: "badge", "data-state": provider.circuit, text: provider.circuit })
      );
      const headers = ["#", "fingerprint", "state", "cooldown until", "in flight", "requests", "errors", "source", ""];
      return el("div", { class: "provider-block", "data-provider": provider.name }, title, table(headers, rows));
    })
  );
}

function renderLoad(providers) {
  const keys = providers.flatMap((p) => p.keys.map((k) => ({ ...k, provider: p.name })));
  const width = chartWidth("load-chart");
  const bar = 18;
  const gap = 6;
  const labelWidth = Math.min(130, width / 3);
  const height = Math.max(1, keys.length) * (bar + gap) + 4;
  const max = Math.max(1, ...keys.map((k) => k.requests));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "requests per key", id: "load-svg" });
  keys.forEach((key, i) => {
    const y = i * (bar + gap) + 2;
    const full = width - labelWidth - 60;
    const w = (key.requests / max) * full;
    const e = (key.errors / max) * full;
    chart.append(svg("text", { x: 0, y: y + bar - 5 }, key.fingerprint));
    chart.append(svg("rect", { x: labelWidth, y, width: Math.max(w, 1), height: bar, fill: "#2563eb", rx: 3, "data-key": `${key.provider}:${key.key_index}` }));
    if (e > 0) chart.append(svg("rect", { x: labelWidth, y, width: Math.max(e, 1), height: bar, fill: "#dc2626", rx: 3 }));
    chart.append(svg("text", { x: labelWidth + w + 6, y: y + bar - 5 }, `${key.requests}`));
  });
  $("load-chart").replaceChildren(chart);
}

// Drawn at the container's own width, so labels keep their size on a laptop and on a phone.
function chartWidth(id) {
  return Math.max(300, Math.round($(id).clientWidth || 640));
}

// Per-minute points from the gateway: requests as grey bars, p50 / p95 latency as lines.
function renderLatency(series) {
  const points = series.points;
  const width = chartWidth("latency-chart");
  const height = 190;
  const pad = 34;
  const bottom = height - 20;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "latency over time", id: "latency-svg" });
  const max = Math.max(1, ...points.map((p) => p.latency_ms.p95 || 0));
  const most = Math.max(1, ...points.map((p) => p.requests));
  const step = (width - pad - 4) / Math.max(1, points.length);
  const x = (i) => pad + (i + 0.5) * step;
  const y = (v) => bottom - (v / max) * (bottom - 18);
  chart.append(svg("line", { x1: pad, y1: bottom, x2: width, y2: bottom, stroke: "#e3e6eb" }));
  chart.append(svg("text", { x: 0, y: 14 }, `${fmt(max, 0)} ms`));
  chart.append(svg("text", { x: 0, y: bottom }, "0"));
  points.forEach((p, i) => {
    if (!p.requests) return;
    const h = (p.requests / most) * (bottom - 18) * 0.5;
    chart.append(svg("rect", { x: x(i) - step * 0.4, y: bottom - h, width: Math.max(1, step * 0.8), height: h, class: "volume" }));
  });
  for (const [field, name] of [["p95", "line-p95"], ["p50", "line-p50"]]) {
    let d = "";
    let pen = "M";
    points.forEach((p, i) => {
      const v = p.latency_ms[field];
      if (v === null) {
        pen = "M";
        return;
      }
      d += `${pen}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
      chart.append(svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: name }));
    });
    if (d) chart.append(svg("path", { d, class: name }));
  }
  const label = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (points.length) {
    chart.append(svg("text", { x: pad, y: height - 4 }, label(points[0].at)));
    chart.append(svg("text", { x: width - 2, y: height - 4, "text-anchor": "end" }, label(points[points.length - 1].at)));
  }
  chart.append(svg("text", { x: pad + 60, y: 14, class: "legend-p50" }, "p50"));
  chart.append(svg("text", { x: pad + 95, y: 14, class: "legend-p95" }, "p95"));
  chart.append(svg("text", { x: pad + 130, y: 14 }, "requests"));
  $("latency-chart").replaceChildren(chart);
}

function renderSummary(summary) {
  $("summary-window").textContent = `(${summary.window})`;
  facts($("summary-facts"), [
    ["requests", fmt(summary.requests), "requests"],
    ["success rate", pct(summary.success_rate)],
    ["latency p50 / p95 / p99", `${fmt(summary.latency_ms.p50, 1)} / ${fmt(summary.latency_ms.p95, 1)} / ${fmt(summary.latency_ms.p99, 1)} ms`],
    ["first token p50 / p95", `${fmt(summary.ttft_ms.p50, 1)} / ${fmt(summary.ttft_ms.p95, 1)} ms`],
    ["tokens", fmt(summary.tokens)],
    ["cost", "$" + fmt(summary.cost_usd, 4)],
    ["cache hit rate", pct(summary.cache_hit_rate)],
  ]);
  const rows = summary.providers.map((p) =>
    el("tr", {}, el("td", { text: p.name }), el("td", { text: fmt(p.requests) }), el("td", { text: fmt(p.errors) }),
      el("td", { text: fmt(p.latency_ms.p50, 1) }), el("td", { text: fmt(p.latency_ms.p95, 1) }))
  );
  $("provider-summary").replaceChildren(table(["provider", "requests", "errors", "p50 ms", "p95 ms"], rows));
  const types = Object.entries(summary.errors_by_type);
  $("errors-by-type").replaceChildren(
    types.length
      ? table(["type", "count"], types.map(([t, n]) => el("tr", {}, el("td", { text: t }), el("td", { text: fmt(n) }))))
      : el("p", { class: "muted", text: "no errors in this window" })
  );
}

function renderGroups(groups) {
  const rows = groups.map((g) =>
    el("tr", {}, el("td", { text: g.key_group }), el("td", { text: fmt(g.user_count) }), el("td", { text: fmt(g.total_requests) }),
      el("td", { text: fmt(g.total_tokens) }), el("td", { text: g.last_request_at ? new Date(g.last_request_at).toLocaleString() : "–" }))
  );
  $("groups").replaceChildren(
    rows.length ? table(["group", "users", "requests", "tokens", "last request"], rows) : el("p", { class: "muted", text: "no group data (database unavailable?)" })
  );
}

function renderErrors(data) {
  const rows = data.errors.map((e) =>
    el("tr", {}, el("td", { text: new Date(e.at).toLocaleTimeString() }), el("td", { text: e.route }), el("td", { text: e.status }),
      el("td", { text: e.type }), el("td", { text: e.provider || "–" }), el("td", { text: e.message }), el("td", { text: e.request_id || "" }))
  );
  $("recent-errors").replaceChildren(
    rows.length ? table(["time", "route", "status", "type", "provider", "message", "request id"], rows) : el("p", { class: "muted", text: "no recent errors" })
  );
}

function renderClients(data) {
  if (data === null) {
    $("clients").replaceChildren(el("p", { class: "muted", text: "client keys are not available on this gateway" }));
    return;
  }
  const rows = data.clients.map((c) =>
    el("tr", {}, el("td", { text: c.key_prefix }), el("td", { text: c.user_id }), el("td", { text: c.tier || "–" }), el("td", { text: c.name || "–" }),
      el("td", { text: c.revoked_at ? "revoked" : "active" }), el("td", { text: c.last_used_at ? new Date(c.last_used_at).toLocaleString() : "never" }),
      el("td", { class: "actions" }, c.revoked_at ? null : el("button", { type: "button", class: "danger", text: "Revoke", onclick: () => act("DELETE", `/api/admin/clients/${c.id}`) })))
  );
  $("clients").replaceChildren(
    rows.length ? table(["prefix", "user", "tier", "name", "status", "last used", ""], rows) : el("p", { class: "muted", text: "no client keys yet" })
  );
}

// ---- actions and polling ---------------------------------------------------------------------

async function act(method, path, body) {
  try {
    const result = await api(method, path, body);
    notice("");
    await refresh();
    return result;
  } catch (error) {
    notice(`${method} ${path}: ${error.message}`);
    return null;
  }
}

async function optional(path) {
  try {
    return await api("GET", path);
  } catch (error) {
    if (error.status === 404 || error.status === 405) return null;
    throw error;
  }
}

async function refresh() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  const window = $("window").value;
  try {
    const [health, summary, series, errors, clients] = await Promise.all([
      api("GET", "/api/admin/api-keys/health"),
      api("GET", `/api/admin/metrics/summary?window=${window}`),
      api("GET", `/api/admin/metrics/series?minutes=${SERIES_MINUTES[window]}`),
      optional("/api/admin/errors/recent"),
      optional("/api/admin/clients"),
    ]);
    renderHealth(health);
    renderSummary(summary);
    renderLatency(series);
    renderErrors(errors || { errors: [] });
    renderClients(clients);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (error) {
    if (sessionStorage.getItem(TOKEN_KEY)) notice("refresh failed: " + error.message);
  }
}

function showLoggedIn(loggedIn) {
  $("login").hidden = loggedIn;
  $("main").hidden = !loggedIn;
  $("logout").hidden = !loggedIn;
  clearInterval(timer);
  if (loggedIn) {
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("login-error").textContent = message || "";
  showLoggedIn(false);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("login-error").textContent = "";
    showLoggedIn(true);
  });
  $("logout").addEventListener("click", () => logout(""));
  $("window").addEventListener("change", refresh);
  $("probe").addEventListener("click", async () => {
    const result = await act("POST", "/api/admin/api-keys/probe");
    if (result) notice(`probed ${result.results.length} keys: ${result.results.filter((r) => r.ok).length} answered`);
  });
  $("vault-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const provider = $("vault-provider").value;
    const result = await act("POST", `/api/admin/api-keys/${provider}`, { key: $("vault-key").value });
    if (result) {
      $("vault-key").value = "";
      notice(`key ${result.fingerprint} added to ${provider}`);
    }
  });
  $("client-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { user_id: $("client-user").value.trim() };
    if ($("client-tier").value.trim()) body.tier = $("client-tier").value.trim();
    if ($("client-name").value.trim()) body.name = $("client-name").value.trim();
    const result = await act("POST", "/api/admin/clients", body);
    if (result) {
      const box = $("client-created");
      box.textContent = `New key for ${result.user_id} (shown once, copy it now): ${result.key}`;
      box.hidden = false;
      $("client-form").reset();
    }
  });
  showLoggedIn(Boolean(sessionStorage.getItem(TOKEN_KEY)));
});

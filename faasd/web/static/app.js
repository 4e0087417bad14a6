// faasd's page: reads the control API with the session cookie the login form set.
// Everything a function or an image supplied (names, images, logs, answers) is shown as text,
// never parsed as HTML: textContent and createElement only.
"use strict";

const $ = (selector) => document.querySelector(selector);
const VIEWS = ["login-view", "functions-view", "function-view"];
const SAMPLES = 30;          // points on a chart: a minute at one every 2 s, the newest on the right
const METRICS_EVERY_MS = 2000;
const LIST_EVERY_MS = 5000;
const LOG_LINES = 500;

let timers = [];
let logStream = null;
let samples = [];

class LoggedOut extends Error {}

async function api(path, options = {}) {
  const headers = { "X-Faasd-Web": "1", ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) {
    show("login-view");
    throw new LoggedOut();
  }
  return response;
}

async function json(path, options) {
  const response = await api(path, options);
  const value = await response.json();
  if (!response.ok) throw new Error(value.error || response.statusText);
  return value;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function size(bytes) {
  for (const [suffix, unit] of [["g", 2 ** 30], ["m", 2 ** 20], ["k", 2 ** 10]]) {
    if (bytes && bytes % unit === 0) return `${bytes / unit}${suffix}`;
  }
  return String(bytes);
}

const SANDBOXES = { runc: "runc: a container per connection", fork: "fork: a child of a template per connection" };

function sandbox(f) {
  const mode = f.limits.sandbox || "runc";
  return SANDBOXES[mode] || mode;
}

function limitsText(limits) {
  return `memory ${size(limits.memory_bytes)}  cpus ${limits.cpus}  pids ${limits.pids}  ` +
    `timeout ${limits.timeout_seconds}s  tmp ${size(limits.tmp_bytes)}  warm ${limits.warm}  reuse ${limits.reuse}  ` +
    `sandbox ${limits.sandbox || "runc"}`;
}

function show(view) {
  for (const id of VIEWS) $("#" + id).hidden = id !== view;
  $("#logout").hidden = view === "login-view";
  if (view === "login-view") stop();
}

function stop() {
  for (const timer of timers) clearInterval(timer);
  timers = [];
  if (logStream) logStream.abort();
  logStream = null;
}

function every(ms, work) {
  work();
  timers.push(setInterval(work, ms));
}

// --- the list of functions ---------------------------------------------------------------

async function renderFunctions() {
  const { functions } = await json("/v1/functions");
  const body = $("#functions tbody");
  body.replaceChildren(...functions.map((f) => {
    const link = element("a", f.name);
    link.href = `#/functions/${encodeURIComponent(f.name)}`;
    const l = f.limits;
    return row([link, f.ip, f.version, f.image, size(l.memory_bytes), l.cpus,
      l.pids, `${l.timeout_seconds}s`, size(l.tmp_bytes), l.warm, l.reuse, sandbox(f)]);
  }));
  $("#no-functions").hidden = functions.length > 0;
}

// --- one function ------------------------------------------------------------------------

async function renderFunction(name) {
  const f = await json(`/v1/functions/${encodeURIComponent(name)}`);
  $("#function-name").textContent = f.name;
  const facts = [
    ["Address", `http://${f.ip}/`],
    ["Gateway", f.gateway ? `${f.gateway.url}  (or Host: ${f.name} on ${f.gateway.address})` : "-"],
    ["Version", f.version],
    ["Image", f.image],
    ["Digest", f.digest],
    ["Command", [...f.entrypoint, ...f.cmd].join(" ") || "-"],
    ["Limits", limitsText(f.limits)],
    ["Sandbox", sandbox(f)],
  ];
  $("#function-facts").replaceChildren(...facts.flatMap(([label, value]) => [element("dt", label), element("dd", value)]));
  const served = Object.entries(f.requests).map(([status, count]) => `${status} ${count}`).join(", ");
  $("#served").textContent = `Connections since faasd started: ${served || "none"}`;
  $("#versions tbody").replaceChildren(...f.versions.map((v) => versionRow(f, v)));
}

function versionRow(f, v) {
  let action = "";
  if (!v.current) {
    action = element("button", `${v.version < f.version ? "Roll back" : "Switch"} to ${v.version}`);
    action.type = "button";
    action.dataset.version = v.version;
    action.addEventListener("click", () => rollback(f.name, v.version, f.version));
  }
  const created = new Date(v.created * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
  return row([String(v.version), v.current ? "current" : "", v.image, v.digest.replace("sha256:", "").slice(0, 12),
    created, limitsText(v.limits), action]);
}

async function rollback(name, version, before) {
  const message = $("#version-message");
  try {
    const f = await json(`/v1/functions/${encodeURIComponent(name)}/rollback?version=${version}`, { method: "POST" });
    message.className = "";
    message.textContent = `${f.version > before ? "Switched" : "Rolled back"} to version ${f.version}`;
    await renderFunction(name);
  } catch (error) {
    if (error instanceof LoggedOut) return;
    message.className = "error";
    message.textContent = error.message;
  }
}

// --- request rate and latency, from /metrics ---------------------------------------------

function parseMetrics(text, name) {
  const sample = { t: performance.now() / 1000, requests: 0, sum: 0, count: 0 };
  const pattern = /^(faasd_requests_total|faasd_request_duration_seconds_sum|faasd_request_duration_seconds_count)\{([^}]*)\} (\S+)$/;
  for (const line of text.split("\n")) {
    const match = pattern.exec(line);
    if (!match || !match[2].split(",").includes(`function="${name}"`)) continue;
    const value = Number(match[3]);
    if (match[1] === "faasd_requests_total") sample.requests += value;
    else if (match[1].endsWith("_sum")) sample.sum = value;
    else sample.count = value;
  }
  return sample;
}

async function sampleMetrics(name) {
  const response = await api("/metrics");
  samples.push(parseMetrics(await response.text(), name));
  samples = samples.slice(-(SAMPLES + 1));
  const rates = [], latencies = [];
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1], samples[i]];
    const seconds = b.t - a.t;
    rates.push(seconds > 0 ? (b.requests - a.requests) / seconds : 0);
    latencies.push(b.count > a.count ? (1000 * (b.sum - a.sum)) / (b.count - a.count) : null);
  }
  draw($("#rate-chart"), rates);
  draw($("#latency-chart"), latencies);
  const rate = rates.at(-1), latency = latencies.filter((x) => x !== null).at(-1);
  $("#rate-now").textContent = rate === undefined ? "" : `${rate.toFixed(2)} req/s`;
  $("#latency-now").textContent = latency === undefined ? "-" : `${latency.toFixed(1)} ms`;
}

function draw(svg, values) {
  const top = Math.max(1e-9, ...values.filter((v) => v !== null));
  const left = SAMPLES - values.length;
  const points = values.map((v, i) => v === null ? null : `${((left + i) * 300) / (SAMPLES - 1)},${100 - (v / top) * 95}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.filter(Boolean).join(" "));
  svg.replaceChildren(line);
}

// --- the live log ------------------------------------------------------------------------

async function followLog(name) {
  const pre = $("#log");
  pre.textContent = "";
  logStream = new AbortController();
  const response = await api(`/v1/functions/${encodeURIComponent(name)}/logs?tail=100&follow=1`, { signal: logStream.signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let lines = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    lines = (lines.join("") + value).split(/(?<=\n)/).slice(-LOG_LINES);
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = lines.join("");
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
}

// --- a request to the function -----------------------------------------------------------

async function sendRequest(name) {
  const fields = {
    method: $("#request-method").value,
    path: $("#request-path").value,
    content_type: $("#request-type").value,
    body: $("#request-body").value,
  };
  const response = await api(`/ui/functions/${encodeURIComponent(name)}/request`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(fields),
  });
  const answer = await response.json();
  $("#response").hidden = false;
  if (!response.ok) {
    $("#response-status").className = "error";
    $("#response-status").textContent = answer.error;
    $("#response-headers").textContent = "";
    $("#response-body").textContent = "";
    return;
  }
  $("#response-status").className = "";
  $("#response-status").textContent = `${answer.status} ${answer.reason || ""} · ${answer.ms} ms` +
    (answer.truncated ? " · body cut at 64 KiB" : "");
  $("#response-headers").textContent = answer.headers.map(([key, value]) => `${key}: ${value}`).join("\n");
  $("#response-body").textContent = answer.body;
}

// --- views and start-up --------------------------------------------------------------------

function quietly(promise) {
  promise.catch((error) => { if (!(error instanceof LoggedOut) && error.name !== "AbortError") console.error(error); });
}

function route() {
  stop();
  const match = /^#\/functions\/([a-z0-9-]+)$/.exec(location.hash);
  if (match) {
    const name = match[1];
    samples = [];
    $("#crumb").textContent = `/ ${name}`;
    $("#response").hidden = true;
    $("#version-message").textContent = "";
    show("function-view");
    every(LIST_EVERY_MS, () => quietly(renderFunction(name)));
    every(METRICS_EVERY_MS, () => quietly(sampleMetrics(name)));
    quietly(followLog(name));
  } else {
    $("#crumb").textContent = "";
    show("functions-view");
    every(LIST_EVERY_MS, () => quietly(renderFunctions()));
  }
}

function start() {
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/ui/login", {
      method: "POST", body: new URLSearchParams({ token: $("#token").value }), credentials: "same-origin",
    });
    $("#token").value = "";
    if (response.ok) {
      $("#login-error").textContent = "";
      route();
    } else {
      $("#login-error").textContent = (await response.json()).error;
    }
  });
  $("#logout").addEventListener("click", async () => {
    await fetch("/ui/logout", { method: "POST", headers: { "X-Faasd-Web": "1" }, credentials: "same-origin" });
    show("login-view");
  });
  $("#request-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const match = /^#\/functions\/([a-z0-9-]+)$/.exec(location.hash);
    if (match) quietly(sendRequest(match[1]));
  });
  window.addEventListener("hashchange", route);
  route();
}

start();

// The console's shell: routing between pages (#/page/arg), polling the active page about
// once a second, calling the API (writes with the token), the confirmation dialog, and a
// safe element builder (text is always set as text, never parsed as HTML).
"use strict";

const EB = {
  pages: {},
  info: null,
  current: null,
  timer: null,
  busy: false,
};

// h("td", {class: "x", onclick: f}, "text", child…): an element; strings become text nodes.
EB.h = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

EB.fill = function (node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
};

EB.duration = function (ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return Math.round(ms) + "ms";
  let s = Math.floor(ms / 1000);
  const units = [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]];
  const i = units.findIndex(([size]) => s >= size);
  const [size, unit] = units[i];
  let out = Math.floor(s / size) + unit;
  const next = units[i + 1];
  if (next && Math.floor((s % size) / next[0]) > 0) out += " " + Math.floor((s % size) / next[0]) + next[1];
  return out;
};

EB.time = function (seconds) {
  if (!seconds) return "-";
  return new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z");
};

EB.ago = function (seconds) {
  return EB.duration(Math.max(0, Date.now() - seconds * 1000)) + " ago";
};

EB.json = function (value) {
  return JSON.stringify(value, null, 2);
};

EB.token = function () {
  return sessionStorage.getItem("eventbus-token") || "";
};

// GET path → JSON; a POST when body is given (with the token). Errors throw with the
// server's reason.
EB.api = async function (path, body) {
  const init = { headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers.Authorization = "Bearer " + EB.token();
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.status + " " + response.statusText);
  return data;
};

EB.status = function (text, bad) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = bad ? "error" : "muted";
};

// Asks before a write; resolves true on Confirm.
EB.confirm = function (text) {
  const modal = document.getElementById("modal");
  document.getElementById("modal-text").textContent = text;
  modal.hidden = false;
  return new Promise((resolve) => {
    const done = (answer) => {
      modal.hidden = true;
      document.getElementById("modal-confirm").onclick = null;
      document.getElementById("modal-cancel").onclick = null;
      resolve(answer);
    };
    document.getElementById("modal-confirm").onclick = () => done(true);
    document.getElementById("modal-cancel").onclick = () => done(false);
  });
};

EB.writable = function () {
  return EB.info && EB.info.writes_allowed;
};

// #/page/arg… → [page, args].
EB.route = function () {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = EB.pages[parts[0]] ? parts[0] : "overview";
  return [name, parts.slice(1)];
};

EB.go = function (...parts) {
  location.hash = "#/" + parts.map(encodeURIComponent).join("/");
};

EB.show = function () {
  const [name, args] = EB.route();
  const page = EB.pages[name];
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  clearInterval(EB.timer);
  const main = document.getElementById("page");
  main.replaceChildren();
  main.dataset.page = name;
  EB.current = page.render(main, args) || {};
  const tick = async () => {
    if (EB.busy || !EB.current.poll) return;
    EB.busy = true;
    try {
      await EB.current.poll();
      EB.status("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      EB.status(e.message, true);
    } finally {
      EB.busy = false;
    }
  };
  EB.busy = false;
  tick();
  if (!EB.current.once) EB.timer = setInterval(tick, 1000);
};

EB.start = async function () {
  // The token comes in the fragment (#token=…), which browsers never send to the server.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("eventbus-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", "#/overview");
  }
  try {
    EB.info = await EB.api("/api/info");
  } catch (e) {
    EB.status(e.message, true);
    EB.info = { writes_allowed: false };
  }
  document.getElementById("namespace").textContent =
    "namespace " + EB.info.namespace + " on " + EB.info.server;
  const mode = document.getElementById("mode");
  mode.textContent = EB.writable() ? "writes allowed" : "read-only";
  mode.classList.add(EB.writable() ? "warn" : "ok");
  const token = document.getElementById("token");
  token.hidden = !EB.writable();
  token.value = EB.token();
  token.addEventListener("change", () => sessionStorage.setItem("eventbus-token", token.value.trim()));
  window.addEventListener("hashchange", EB.show);
  EB.show();
};

document.addEventListener("DOMContentLoaded", EB.start);

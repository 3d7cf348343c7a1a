// Baton's dashboard: this node's view of the cluster, every failover group, and the
// decisions as they happen (the /events stream, resumed with Last-Event-ID). Plain DOM, no
// build step. Every text from the server goes in through textContent, never as HTML.
"use strict";

const MAX_EVENTS = 100;
let token = sessionStorage.getItem("baton-token");
let lastEventId = 0; // replay what the node still holds, then follow
let groupsTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function time(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

function key(k) {
  return `${k.scope.tenant}/${k.scope.namespace}/${k.group}`;
}

function showError(message) {
  const e = document.getElementById("error");
  e.hidden = !message;
  e.textContent = message || "";
}

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (r.status === 401) { logout(); throw new Error("the token was refused"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

async function refreshCluster() {
  try {
    const s = await api("/cluster/status");
    document.getElementById("summary").textContent =
      `node ${s.id} · ${s.role.toLowerCase()} · leader ${s.leader ?? "none"} · term ${s.term}`;
    const body = document.querySelector("#members tbody");
    body.replaceChildren(...s.members.map((m) => el("tr", {},
      el("td", m.id === s.leader ? { class: "leader" } : {}, m.id),
      el("td", {}, m.voter ? "voter" : "learner"),
      el("td", {}, m.id === s.leader ? "leader" : (m.id === s.id ? s.role.toLowerCase() : "follower")),
      el("td", {}, m.api_addr), el("td", {}, m.raft_addr))));
    document.getElementById("indexes").textContent =
      `this node: log ${s.last_log_index ?? "-"}, committed ${s.committed_index ?? "-"}, applied ${s.applied_index ?? "-"}, snapshot ${s.snapshot_index ?? "-"}`;
    showError("");
  } catch (e) { showError(`cluster: ${e.message}`); }
}

function roleOf(group, session) {
  const h = group.holder;
  if (h && h.session === session) return h.stage === "Primary" ? "Primary" : "PendingPrimary";
  return "Secondary";
}

async function refreshGroups() {
  try {
    const { groups } = await api("/groups");
    const cards = groups.map((g) => {
      const holder = g.holder ? `${g.holder.session} (${roleOf(g, g.holder.session)})` : "nobody";
      const moving = g.handover ? el("span", { class: "moving" }, ` · hand-over from ${g.handover.from} (${g.handover.reason})`) : "";
      const rows = Object.values(g.sessions).map((s) => {
        const role = roleOf(g, s.id);
        const score = s.last_heartbeat ? s.last_heartbeat.heartbeat.score / 100 : "-";
        return el("tr", {}, el("td", {}, s.id), el("td", { class: `role ${role}` }, role),
          el("td", {}, score), el("td", {}, s.enabled ? "" : "disabled"));
      });
      return el("div", { class: "group", "data-group": key(g.key) },
        el("h3", {}, key(g.key)),
        el("div", { class: "meta" }, `baton: ${holder} · epoch ${g.epoch} · timeout ${g.config.failover_timeout_ms} ms`, moving),
        el("table", {}, el("tbody", {}, ...rows)));
    });
    document.getElementById("groups").replaceChildren(...cards);
  } catch (e) { showError(`groups: ${e.message}`); }
}

function scheduleGroups() {
  clearTimeout(groupsTimer);
  groupsTimer = setTimeout(refreshGroups, 150);
}

function addEvent(id, d) {
  const roles = (d.roles || []).map((r) => `${r.session}→${r.role}`).join(" ");
  const row = el("tr", { class: "new", "data-kind": d.kind, "data-id": id },
    el("td", {}, time(d.at)), el("td", {}, key(d.group)), el("td", {}, d.kind.replace(/_/g, " ")),
    el("td", {}, d.reason), el("td", {}, d.epoch), el("td", {}, roles));
  const body = document.querySelector("#events tbody");
  body.prepend(row);
  while (body.children.length > MAX_EVENTS) body.lastChild.remove();
}

function setLive(on) {
  const live = document.getElementById("live");
  live.className = `live ${on ? "on" : "off"}`;
  live.textContent = on ? "● live" : "● reconnecting";
}

async function follow() {
  for (;;) {
    try {
      const r = await fetch("/events", {
        headers: { Authorization: `Bearer ${token}`, "Last-Event-ID": String(lastEventId) },
      });
      if (!r.ok) throw new Error(`events: ${r.status}`);
      setLive(true);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const field = (name) => block.split("\n").find((l) => l.startsWith(name + ":"))?.slice(name.length + 1).trim();
          const event = field("event");
          if (event === "lagged") { scheduleGroups(); continue; }
          const data = field("data");
          const id = field("id");
          if (!event || !data || !id) continue;
          lastEventId = Number(id);
          addEvent(lastEventId, JSON.parse(data));
          scheduleGroups();
        }
      }
    } catch (e) { showError(e.message); }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function logout() {
  sessionStorage.removeItem("baton-token");
  token = null;
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
}

function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  refreshCluster();
  refreshGroups();
  follow();
  setInterval(refreshCluster, 2000);
  setInterval(refreshGroups, 5000);
}

// A token may come in the URL's fragment (never sent to the server): /dashboard#token=...
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  token = fromHash;
  sessionStorage.setItem("baton-token", token);
  history.replaceState(null, "", location.pathname);
}
document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("baton-token", token);
  start();
});
if (token) start(); else logout();

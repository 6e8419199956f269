// Raworc's web page: log in, see your sessions live, create one, talk to
// a session's agent while watching its desktop.
// Plain ES modules; the API is the one at /api/v0 (see /docs).

import RFB from "/ui/novnc/core/rfb.js";

const API = "/api/v0";
const main = document.getElementById("main");
const errorBox = document.getElementById("error");
const who = document.getElementById("who");
const logoutButton = document.getElementById("logout");

/** The token of this tab's login (kept for the tab only). */
const token = {
  get: () => sessionStorage.getItem("raworc.token"),
  set: (t) => sessionStorage.setItem("raworc.token", t),
  clear: () => sessionStorage.removeItem("raworc.token"),
};

/** Thrown when a call found the login expired (the login form is shown). */
class LoggedOut extends Error {}

function showError(message) {
  if (message instanceof LoggedOut) return;
  if (message instanceof Error) message = message.message;
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

/** Calls the API; an expired login sends the page back to the login form. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (token.get()) headers.authorization = `Bearer ${token.get()}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (response.status === 401 && token.get()) {
    token.clear();
    showLogin("Your login has expired; please log in again.");
    throw new LoggedOut("logged out");
  }
  if (!response.ok) {
    throw new Error(data?.error ?? `${method} ${path} failed (${response.status})`);
  }
  return data;
}

/** Builds an element: el("td", {class: "state"}, "running"). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

function showLogin(message = "") {
  closeStreams();
  who.textContent = "";
  logoutButton.hidden = true;
  showError(message);
  const form = el("form", { id: "login", "aria-label": "Log in" },
    el("label", {}, "Operator", el("input", { name: "user", autocomplete: "username", required: "" })),
    el("label", {}, "Password", el("input", { name: "pass", type: "password", autocomplete: "current-password", required: "" })),
    el("button", { type: "submit" }, "Log in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    try {
      const user = encodeURIComponent(data.get("user"));
      const answer = await api(`/operators/${user}/login`, { method: "POST", body: { pass: data.get("pass") } });
      token.set(answer.token);
      showError("");
      route();
    } catch (err) {
      showError(err);
    }
  });
  main.replaceChildren(el("h1", {}, "Log in to Raworc"), form);
  form.querySelector("input").focus();
}

let streams = [];
let desktop = null;
function closeStreams() {
  for (const s of streams) s.close();
  streams = [];
  desktop?.disconnect();
  desktop = null;
}

function sessionRow(s) {
  return el("tr", { "data-id": s.id },
    el("td", {}, el("a", { href: `#/sessions/${encodeURIComponent(s.id)}` }, s.name ?? s.id)),
    el("td", { class: "state" }, s.state),
    el("td", { class: "busy" }, s.busy ? "working" : ""),
    el("td", {}, new Date(s.created_at).toLocaleString()));
}

/** Keeps the list live from the server's stream of session changes. */
function follow(body) {
  const url = `${API}/sessions/stream?token=${encodeURIComponent(token.get())}`;
  const source = new EventSource(url);
  source.addEventListener("session", (e) => {
    const s = JSON.parse(e.data);
    const row = body.querySelector(`tr[data-id="${CSS.escape(s.id)}"]`);
    if (s.state === "deleted") {
      row?.remove();
    } else if (row) {
      row.replaceWith(sessionRow(s));
    } else {
      body.prepend(sessionRow(s));
      document.getElementById("none")?.remove();
    }
  });
  // Changes may have been missed: read the list again.
  source.addEventListener("resync", () => showSessions().catch((err) => showError(err)));
  streams.push(source);
}

async function showSessions() {
  closeStreams();
  const me = await api("/auth");
  who.textContent = `${me.user} (${me.role})`;
  logoutButton.hidden = false;
  const body = el("tbody");
  // Listening first, then reading the list: no change falls in between.
  follow(body);
  const sessions = await api("/sessions");
  for (const s of sessions) body.append(sessionRow(s));
  const table = el("table", { id: "sessions" },
    el("thead", {}, el("tr", {}, el("th", {}, "Session"), el("th", {}, "State"), el("th", {}, "Agent"), el("th", {}, "Created"))),
    body);
  const form = el("form", { id: "create", "aria-label": "New session" },
    el("label", {}, "Name", el("input", { name: "name" })),
    el("label", {}, "Instructions", el("textarea", { name: "instructions", rows: "3" })),
    el("label", {}, "First message", el("textarea", { name: "prompt", rows: "2" })),
    el("button", { type: "submit" }, "Create session"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const fields = {};
    for (const key of ["name", "instructions", "prompt"]) {
      const value = String(data.get(key) ?? "").trim();
      if (value) fields[key] = value;
    }
    try {
      await api("/sessions", { method: "POST", body: fields });
      showError("");
      form.reset();
    } catch (err) {
      showError(err);
    }
  });
  const empty = sessions.length ? [] : [el("p", { id: "none" }, "No sessions yet.")];
  main.replaceChildren(
    el("section", {}, el("h1", {}, "Sessions"), table, ...empty),
    el("section", {}, el("h2", {}, "New session"), form));
}

logoutButton.addEventListener("click", () => {
  token.clear();
  showLogin("You are logged out.");
});

/** Shows the page the address names: a session, or the list. */
function route() {
  if (!token.get()) return showLogin();
  const m = location.hash.match(/^#\/sessions\/([^/]+)$/);
  const shown = m ? showSession(decodeURIComponent(m[1])) : showSessions();
  shown.catch((err) => showError(err));
}

window.addEventListener("hashchange", route);
route();

// ---- The session page: the chat with the agent's steps live, and the desktop.

function closeSession() {
  closeStreams();
}

/** One line of the agent's work, from an event. */
function stepLine(event) {
  const m = event.metadata ?? {};
  switch (event.type) {
    case "tool_use":
      return el("li", { class: "step tool-use" }, `→ ${m.name}: ${JSON.stringify(m.input)}`);
    case "tool_result": {
      const line = el("li", { class: m.is_error ? "step tool-result error" : "step tool-result" },
        `${m.is_error ? "✗" : "✓"} ${event.content.split("\n")[0] || "(done)"}`);
      if (m.image_url) {
        const src = `${m.image_url}?token=${encodeURIComponent(token.get())}`;
        const link = el("a", { href: src, target: "_blank", rel: "noopener" },
          el("img", { src, alt: "screenshot", class: "thumb" }));
        line.append(" ", link);
      }
      return line;
    }
    case "thinking":
    case "text":
      return el("li", { class: `step ${event.type}` }, event.content);
    case "error":
      return el("li", { class: "step error" }, `error: ${event.content}`);
    default:
      return null;
  }
}

function messageItem(m) {
  return el("li", { class: `message ${m.role}` }, el("strong", {}, m.role === "user" ? "You" : "Agent"), " ", m.content);
}

async function showSession(id) {
  closeSession();
  const s = await api(`/sessions/${encodeURIComponent(id)}`);
  const chat = el("ol", { id: "chat" });
  for (const m of await api(`/sessions/${encodeURIComponent(id)}/messages?limit=1000`)) chat.append(messageItem(m));
  const state = el("span", { id: "state", class: "state" }, s.state);
  const busy = el("span", { id: "busy", class: "busy" }, s.busy ? "working…" : "");
  const input = el("textarea", { id: "prompt", rows: "2", "aria-label": "Message" });
  const send = el("button", { type: "submit" }, "Send");
  const cancel = el("button", { type: "button", id: "cancel", hidden: "" }, "Cancel");
  const form = el("form", { id: "say", "aria-label": "Message the agent" }, input, send, cancel);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    try {
      const m = await api(`/sessions/${encodeURIComponent(id)}/messages`, { method: "POST", body: { content } });
      chat.append(messageItem(m));
      input.value = "";
      showError("");
    } catch (err) {
      showError(err);
    }
  });
  cancel.addEventListener("click", () =>
    api(`/sessions/${encodeURIComponent(id)}/cancel`, { method: "POST" }).catch((err) => showError(err)));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  const screen = el("div", { id: "desktop", "aria-label": "The session's desktop" });
  // View-only unless asked: the desktop is the agent's workplace.
  const control = el("input", { type: "checkbox", id: "control" });
  control.addEventListener("change", () => {
    desktop?.disconnect();
    desktop = null;
    connectDesktop(id, screen, control.checked);
  });
  const controlLabel = el("label", { class: "control" }, control, " Take control");
  // Lifecycle actions; each says what it did (or the API's refusal).
  const act = (label, run) => {
    const button = el("button", { type: "button", "data-action": label.toLowerCase() }, label);
    button.addEventListener("click", async () => {
      try {
        await run();
        showError("");
      } catch (err) {
        showError(err);
      }
    });
    return button;
  };
  const sid = encodeURIComponent(id);
  const actions = el("div", { class: "actions" },
    act("Pause", () => api(`/sessions/${sid}/state`, { method: "PUT", body: { state: "paused" } })),
    act("Resume", () => api(`/sessions/${sid}/state`, { method: "PUT", body: { state: "running" } })),
    act("Close", () => api(`/sessions/${sid}/close`, { method: "POST" })),
    act("Restore", () => api(`/sessions/${sid}/restore`, { method: "POST" })),
    act("Delete", async () => {
      if (!confirm("Delete this session, its computer and its disk?")) return;
      await api(`/sessions/${sid}`, { method: "DELETE" });
      location.hash = "";
    }));
  main.replaceChildren(
    el("p", {}, el("a", { href: "#" }, "← Sessions")),
    el("h1", {}, s.name ?? s.id, " ", state, " ", busy),
    actions,
    el("div", { class: "session" },
      el("section", { class: "talk" }, chat, form),
      el("section", { class: "screen" }, controlLabel, screen)));
  // The agent's steps and the session's state, live from now on.
  const past = await api(`/sessions/${encodeURIComponent(id)}/events?limit=1000`);
  const after = past.length ? past[past.length - 1].seq : 0;
  const url = `${API}/sessions/${encodeURIComponent(id)}/events/stream?after=${after}&token=${encodeURIComponent(token.get())}`;
  const source = new EventSource(url);
  for (const kind of ["thinking", "text", "tool_use", "tool_result", "error", "complete", "state"]) {
    source.addEventListener(kind, (e) => {
      const event = JSON.parse(e.data);
      if (event.type === "state") {
        state.textContent = event.metadata.state;
        busy.textContent = event.metadata.busy ? "working…" : "";
        cancel.hidden = !event.metadata.busy;
        if (event.metadata.state === "running" && !desktop) connectDesktop(id, screen, control.checked);
        return;
      }
      if (event.type === "complete") {
        // The model's last text is the reply itself: shown once, as the reply.
        const last = chat.lastElementChild;
        if (last?.classList.contains("text") && last.textContent === event.content) last.remove();
        chat.append(messageItem({ role: "assistant", content: event.content }));
        return;
      }
      const line = stepLine(event);
      if (line) chat.append(line);
    });
  }
  streams.push(source);
  if (s.state === "running") connectDesktop(id, screen, false);
}

/** The desktop, scaled to its pane (noVNC over the server's relay); the
 * relay passes input only when the page asks for control. */
function connectDesktop(id, screen, control) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = `token=${encodeURIComponent(token.get())}${control ? "&control=true" : ""}`;
  const url = `${scheme}://${location.host}/vnc/${encodeURIComponent(id)}/stream?${query}`;
  const rfb = new RFB(screen, url);
  rfb.viewOnly = !control;
  rfb.scaleViewport = true;
  // Says on the pane whether (and how) it is connected, for people and tests.
  screen.dataset.connected = "";
  rfb.addEventListener("connect", () => {
    screen.dataset.connected = control ? "control" : "view";
  });
  rfb.addEventListener("disconnect", () => {
    if (desktop === rfb) {
      desktop = null;
      screen.dataset.connected = "";
    }
  });
  desktop = rfb;
}

// Raworc's web page: log in, see your sessions live, create one.
// Plain ES modules; the API is the one at /api/v0 (see /docs).

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
      await showSessions();
    } catch (err) {
      showError(err);
    }
  });
  main.replaceChildren(el("h1", {}, "Log in to Raworc"), form);
  form.querySelector("input").focus();
}

let streams = [];
function closeStreams() {
  for (const s of streams) s.close();
  streams = [];
}

function sessionRow(s) {
  return el("tr", { "data-id": s.id },
    el("td", {}, s.name ?? s.id),
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

if (token.get()) {
  showSessions().catch((err) => showError(err));
} else {
  showLogin();
}

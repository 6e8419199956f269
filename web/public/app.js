// Raworc's web page: log in, see your sessions live, create one, talk to a
// session's agent while watching its desktop; admins also manage operators
// and read the audit log. Plain ES modules over the API at /api/v0 (see
// /docs). This module routes the address (#/…) to a view.

import { api, closeAll, el, onSubmit, showError, token } from "./lib.js";
import { showSessions } from "./sessions.js";
import { showSession } from "./session.js";
import { showOperators, showAudit } from "./admin.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
const nav = document.getElementById("nav");
const logoutButton = document.getElementById("logout");

function showLogin(message = "") {
  closeAll();
  who.textContent = "";
  nav.hidden = true;
  logoutButton.hidden = true;
  showError(message);
  const form = el("form", { id: "login", "aria-label": "Log in" },
    el("label", {}, "Operator", el("input", { name: "user", autocomplete: "username", required: "" })),
    el("label", {}, "Password", el("input", { name: "pass", type: "password", autocomplete: "current-password", required: "" })),
    el("button", { type: "submit" }, "Log in"));
  onSubmit(form, async (data) => {
    const user = encodeURIComponent(data.get("user"));
    const answer = await api(`/operators/${user}/login`, { method: "POST", body: { pass: data.get("pass") } });
    token.set(answer.token);
    route();
  });
  main.replaceChildren(el("h1", {}, "Log in to Raworc"), form);
  form.querySelector("input").focus();
}

window.addEventListener("raworc:logged-out", (e) => showLogin(e.detail));
logoutButton.addEventListener("click", () => {
  token.clear();
  showLogin("You are logged out.");
});

/** The view the address names: [title, builder]. */
function viewOf(hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const session = path.match(/^\/sessions\/([^/]+)$/);
  if (session) return () => showSession(decodeURIComponent(session[1]));
  if (path === "/admin/operators") return () => showOperators();
  if (path === "/admin/audit") return () => showAudit(params);
  return () => showSessions(params.get("state") ?? "");
}

let shown = 0;
/** Shows the page the address names (the login form without a token). */
async function route() {
  if (!token.get()) return showLogin();
  closeAll();
  const mine = ++shown;
  try {
    const me = await api("/auth");
    who.textContent = `${me.user} (${me.role})`;
    logoutButton.hidden = false;
    nav.hidden = false;
    for (const a of nav.querySelectorAll("[data-admin]")) a.hidden = me.role !== "admin";
    const nodes = await viewOf(location.hash)();
    // A newer address was followed meanwhile: that one is shown.
    if (mine !== shown) return;
    showError("");
    main.replaceChildren(...nodes);
  } catch (err) {
    showError(err);
  }
}

window.addEventListener("hashchange", route);
route();

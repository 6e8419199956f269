// The sessions list (kept live from the server's stream of session
// changes, filtered by state) and the form that creates a session.

import { api, el, eventSource, onSubmit, showError } from "./lib.js";

const STATES = ["created", "starting", "running", "paused", "closing", "closed", "errored"];
const PAGE = 1000;

function sessionRow(s) {
  return el("tr", { "data-id": s.id, "data-state": s.state },
    el("td", {}, el("a", { href: `#/sessions/${encodeURIComponent(s.id)}` }, s.name ?? s.id)),
    el("td", { class: "state" }, s.state),
    el("td", { class: "busy" }, s.busy ? "working" : ""),
    el("td", {}, s.network === "egress" ? "internet" : ""),
    el("td", {}, new Date(s.created_at).toLocaleString()));
}

/** The list of sessions in `state` ("" for all but deleted), live. */
function sessionTable(state) {
  const body = el("tbody");
  const empty = el("p", { id: "none" }, state ? `No ${state} sessions.` : "No sessions yet.");
  const more = el("button", { type: "button", id: "more", hidden: "" }, "Show more");
  const shown = () => { empty.hidden = body.childElementCount > 0; };
  const query = (offset) => `/sessions?limit=${PAGE}&offset=${offset}${state ? `&state=${state}` : ""}`;
  const load = async (offset) => {
    const page = await api(query(offset));
    for (const s of page) {
      if (!body.querySelector(`tr[data-id="${CSS.escape(s.id)}"]`)) body.append(sessionRow(s));
    }
    more.hidden = page.length < PAGE;
    shown();
  };
  more.addEventListener("click", () => load(body.childElementCount).catch(showError));

  // Listening first, then reading the list: no change falls in between.
  const source = eventSource("/sessions/stream");
  source.addEventListener("session", (e) => {
    const s = JSON.parse(e.data);
    const row = body.querySelector(`tr[data-id="${CSS.escape(s.id)}"]`);
    const belongs = s.state !== "deleted" && (!state || s.state === state);
    if (!belongs) row?.remove();
    else if (row) row.replaceWith(sessionRow(s));
    else body.prepend(sessionRow(s));
    shown();
  });
  // Changes may have been missed: read the list again.
  source.addEventListener("resync", () => {
    body.replaceChildren();
    load(0).catch(showError);
  });
  const table = el("table", { id: "sessions" },
    el("thead", {}, el("tr", {},
      el("th", {}, "Session"), el("th", {}, "State"), el("th", {}, "Agent"),
      el("th", {}, "Network"), el("th", {}, "Created"))),
    body);
  return { node: el("div", {}, table, empty, more), ready: load(0) };
}

/** Rows of secret name → value, with a button for another row. */
function secretRows() {
  const rows = el("div", { class: "secrets" });
  const add = () => {
    const n = rows.childElementCount + 1;
    const remove = el("button", { type: "button", class: "secondary", "aria-label": `Remove secret ${n}` }, "×");
    const row = el("div", { class: "secret" },
      el("input", { name: "secret-name", placeholder: "NAME", "aria-label": `Secret ${n} name`, autocomplete: "off" }),
      el("input", { name: "secret-value", type: "password", placeholder: "value", "aria-label": `Secret ${n} value`, autocomplete: "off" }),
      remove);
    remove.addEventListener("click", () => row.remove());
    rows.append(row);
  };
  const addButton = el("button", { type: "button", class: "secondary" }, "Add a secret");
  addButton.addEventListener("click", add);
  return el("fieldset", {}, el("legend", {}, "Secrets"), rows, addButton);
}

/** The body of `POST /sessions` from the form's fields. */
function createBody(form, data) {
  const body = {};
  for (const key of ["name", "instructions", "setup", "prompt"]) {
    const value = String(data.get(key) ?? "").trim();
    if (value) body[key] = value;
  }
  const secrets = {};
  for (const row of form.querySelectorAll(".secret")) {
    const [name, value] = row.querySelectorAll("input");
    if (!name.value.trim() && !value.value) continue;
    if (!name.value.trim()) throw new Error("secrets: each secret needs a name");
    secrets[name.value.trim()] = value.value;
  }
  if (Object.keys(secrets).length) body.secrets = secrets;
  if (data.get("egress")) body.network = "egress";
  return body;
}

function createForm() {
  const form = el("form", { id: "create", "aria-label": "New session" },
    el("label", {}, "Name", el("input", { name: "name" })),
    el("label", {}, "Instructions", el("textarea", { name: "instructions", rows: "3" })),
    el("label", {}, "Setup script", el("textarea", { name: "setup", rows: "3", placeholder: "#!/bin/sh — run in the computer before it is ready" })),
    secretRows(),
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "egress" }), "Internet access (outbound)"),
    el("label", {}, "First message", el("textarea", { name: "prompt", rows: "2" })),
    el("button", { type: "submit" }, "Create session"));
  onSubmit(form, async (data) => {
    const created = await api("/sessions", { method: "POST", body: createBody(form, data) });
    form.reset();
    form.querySelector(".secrets").replaceChildren();
    const note = el("p", { class: "done", role: "status" }, "Created ",
      el("a", { href: `#/sessions/${encodeURIComponent(created.id)}` }, created.name ?? created.id), ".");
    form.querySelector(".done")?.remove();
    form.append(note);
  });
  return form;
}

/** The sessions page: the list (filtered by `state`) and the create form. */
export async function showSessions(state = "") {
  const filter = el("select", { id: "filter", "aria-label": "Show sessions in state" },
    el("option", { value: "" }, "All states"),
    ...STATES.map((s) => el("option", { value: s }, s)));
  filter.value = state;
  filter.addEventListener("change", () => {
    location.hash = filter.value ? `#/sessions?state=${filter.value}` : "#/sessions";
  });
  const list = sessionTable(state);
  await list.ready;
  return [
    el("section", {}, el("div", { class: "heading" }, el("h1", {}, "Sessions"), filter), list.node),
    el("section", {}, el("h2", {}, "New session"), createForm()),
  ];
}

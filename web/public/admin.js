// The admin pages: the operators (list, create, set a password, change a
// role, delete) and the audit log (filtered and paged through the address,
// so a view can be linked and reloaded). The API refuses both to a user-role
// operator; its answer is shown in the page.

import { LoggedOut, actionButton, api, el, endLogin, seg, showError } from "./lib.js";

const MAX_LIMIT = 1000;
const AUDIT_PAGE = 50;
const AUDIT_FILTERS = ["principal", "session_id", "since", "until"];

/** The view when its data could not be read (e.g. 403 for a user-role operator). */
function loadFailed(heading, what, err, ...more) {
  if (err instanceof LoggedOut) throw err;
  return [heading, el("p", { id: "load-error", class: "session-error", role: "alert" }, `${what}: ${err.message}`), ...more];
}

/** A row's button: its name says which operator; errors go to the error line. */
const rowButton = (label, user, run, attrs = {}) =>
  actionButton(label, run, { class: "secondary", "aria-label": `${label} (${user})`, ...attrs });

const when = (t) => (t ? new Date(t).toLocaleString() : "never");

/** The dialog that sets an operator's password. */
function passwordDialog({ me, say, reload }) {
  const title = el("h2", { id: "password-title" });
  const input = el("input", { name: "pass", type: "password", autocomplete: "new-password", minlength: "8", required: "" });
  const problem = el("p", { class: "session-error", role: "alert", hidden: "" });
  const submit = el("button", { type: "submit" }, "Set password");
  const cancel = el("button", { type: "button", class: "secondary" }, "Cancel");
  const form = el("form", { "aria-labelledby": "password-title" },
    title,
    el("label", {}, "New password", input),
    el("p", { class: "note" }, "At least 8 characters. Logins made with the old password stop working."),
    problem,
    el("div", { class: "buttons" }, submit, cancel));
  const dialog = el("dialog", { id: "password-dialog", "aria-labelledby": "password-title" }, form);
  let user = "";
  cancel.addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      await api(`/operators/${seg(user)}/password`, { method: "PUT", body: { pass: input.value } });
      dialog.close();
      showError("");
      if (user === me.user) return endLogin("Your password is changed; log in with the new one.");
      await reload();
      say(`Password of ${user} set.`);
    } catch (err) {
      if (err instanceof LoggedOut) return;
      problem.textContent = err.message;
      problem.hidden = false;
      showError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return {
    node: dialog,
    open(name) {
      user = name;
      title.textContent = `Set the password of ${name}`;
      input.value = "";
      problem.hidden = true;
      dialog.showModal();
      input.focus();
    },
  };
}

function operatorRow(op, { me, say, reload, dialog }) {
  const self = op.user === me.user;
  const other = op.role === "admin" ? "user" : "admin";
  const changeRole = async () => {
    if (self && !confirm("Make yourself a user? You will no longer see the admin pages.")) return;
    await api(`/operators/${seg(op.user)}`, { method: "PUT", body: { role: other } });
    if (self) {
      location.hash = "#/sessions";
      return;
    }
    await reload();
    say(`${op.user} is now ${other === "admin" ? "an admin" : "a user"}.`);
  };
  const remove = async () => {
    const question = self
      ? "Delete your own account? You will be logged out."
      : `Delete operator ${op.user}? Their logins stop working at once.`;
    if (!confirm(question)) return;
    await api(`/operators/${seg(op.user)}`, { method: "DELETE" });
    if (self) return endLogin("Your account is deleted.");
    await reload();
    say(`Deleted ${op.user}.`);
  };
  return el("tr", { "data-user": op.user, "data-role": op.role },
    el("td", {}, op.user, self ? el("span", { class: "note" }, " (you)") : ""),
    el("td", { class: "role" }, op.role),
    el("td", {}, op.description ?? ""),
    el("td", {}, when(op.created_at)),
    el("td", {}, when(op.last_login)),
    el("td", {}, el("div", { class: "row-actions" },
      rowButton("Set password", op.user, async () => dialog.open(op.user)),
      rowButton(`Make ${other}`, op.user, changeRole),
      rowButton("Delete", op.user, remove, { class: "danger" }))));
}

function createForm({ say, reload }) {
  const form = el("form", { id: "new-operator", "aria-label": "New operator" },
    el("label", {}, "Name", el("input", { name: "user", required: "", autocomplete: "off", maxlength: "64" })),
    el("label", {}, "Password", el("input", { name: "pass", type: "password", required: "", minlength: "8", autocomplete: "new-password" })),
    el("label", {}, "Role", el("select", { name: "role" },
      el("option", { value: "user" }, "user — their own sessions"),
      el("option", { value: "admin" }, "admin — everything"))),
    el("label", {}, "Description", el("input", { name: "description", autocomplete: "off" })),
    el("button", { type: "submit" }, "Create operator"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { user: data.get("user").trim(), pass: data.get("pass"), role: data.get("role") };
    const description = data.get("description").trim();
    if (description) body.description = description;
    say("");
    try {
      const created = await api("/operators", { method: "POST", body });
      form.reset();
      showError("");
      await reload();
      say(`Created operator ${created.user} (${created.role}).`);
    } catch (err) {
      showError(err);
    }
  });
  return form;
}

/** The operators page (admins only). */
export async function showOperators() {
  const heading = el("h1", {}, "Operators");
  let me;
  let operators;
  try {
    [me, operators] = await Promise.all([api("/auth"), api(`/operators?limit=${MAX_LIMIT}`)]);
  } catch (err) {
    return loadFailed(heading, "Could not load the operators", err);
  }
  const status = el("p", { id: "operator-status", class: "done", role: "status" });
  const say = (text) => { status.textContent = text; };
  const body = el("tbody");
  const ctx = { me, say };
  const render = (ops) => body.replaceChildren(...ops.map((op) => operatorRow(op, ctx)));
  ctx.reload = async () => render(await api(`/operators?limit=${MAX_LIMIT}`));
  ctx.dialog = passwordDialog(ctx);
  render(operators);
  const table = el("table", { id: "operators" },
    el("thead", {}, el("tr", {},
      el("th", {}, "Operator"), el("th", {}, "Role"), el("th", {}, "Description"),
      el("th", {}, "Created"), el("th", {}, "Last login"), el("th", {}, "Actions"))),
    body);
  return [
    el("section", {}, heading, status, table),
    el("section", {}, el("h2", {}, "New operator"), createForm(ctx)),
    ctx.dialog.node,
  ];
}

/** The address of the audit log with these filters (empty ones left out). */
function auditAddress(values) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v) query.set(k, v);
  const s = query.toString();
  return s ? `#/admin/audit?${s}` : "#/admin/audit";
}

/** Goes to `address`, showing it again when it is the current one. */
function go(address) {
  if (location.hash === address) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = address;
}

/** A datetime-local value (local time) as RFC 3339 (UTC). */
function toRfc3339(local) {
  const d = new Date(local);
  return local && !Number.isNaN(d.getTime()) ? d.toISOString().replace(/\.000Z$/, "Z") : "";
}

/** An RFC 3339 time as a datetime-local value (local time). */
function toLocalInput(time) {
  const d = new Date(time);
  if (!time || Number.isNaN(d.getTime())) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function filterForm(filters) {
  const field = (name, label, attrs = {}) => el("label", {}, label, el("input", { name, ...attrs }));
  const form = el("form", { id: "audit-filter", "aria-label": "Filter the audit log" },
    field("principal", "Principal", { autocomplete: "off" }),
    field("session_id", "Session id", { autocomplete: "off" }),
    field("since", "Since", { type: "datetime-local", step: "1" }),
    field("until", "Until", { type: "datetime-local", step: "1" }),
    el("div", { class: "buttons" },
      el("button", { type: "submit" }, "Filter"),
      el("a", { href: "#/admin/audit", class: "clear" }, "Clear")));
  form.elements.principal.value = filters.principal ?? "";
  form.elements.session_id.value = filters.session_id ?? "";
  form.elements.since.value = toLocalInput(filters.since);
  form.elements.until.value = toLocalInput(filters.until);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = form.elements;
    go(auditAddress({
      principal: f.principal.value.trim(),
      session_id: f.session_id.value.trim(),
      since: toRfc3339(f.since.value),
      until: toRfc3339(f.until.value),
    }));
  });
  return form;
}

function auditRow(e, filters) {
  const failed = e.outcome >= 400;
  const only = (key, value) => el("a", {
    href: auditAddress({ ...filters, [key]: value }),
    title: `Show only the entries of ${value}`,
  }, value);
  return el("tr", { "data-id": String(e.id), "data-outcome": String(e.outcome), class: failed ? "failed" : "" },
    el("td", { class: "id" }, String(e.id)),
    el("td", { class: "at" }, el("time", { datetime: e.at }, new Date(e.at).toLocaleString())),
    el("td", { class: "principal" }, only("principal", e.principal),
      e.principal_type ? el("div", { class: "note" }, e.principal_type) : ""),
    el("td", { class: "action" }, el("div", { class: "mono" }, e.action),
      el("div", { class: "mono note wrap", title: "The path called" }, e.target)),
    el("td", { class: "session-id mono wrap" }, e.session_id ? only("session_id", e.session_id) : ""),
    el("td", { class: "outcome" }, String(e.outcome), failed ? " " : "", failed ? el("span", { class: "badge" }, "failed") : ""),
    el("td", { class: "request mono wrap" }, e.request_id));
}

/** The audit log (admins only), filtered and paged by the address's `params`. */
export async function showAudit(params = new URLSearchParams()) {
  const heading = el("h1", {}, "Audit log");
  const filters = {};
  for (const key of AUDIT_FILTERS) if (params.get(key)) filters[key] = params.get(key);
  const offset = Math.max(0, Number.parseInt(params.get("offset") ?? "0", 10) || 0);
  const query = new URLSearchParams({ ...filters, limit: String(AUDIT_PAGE + 1), offset: String(offset) });
  const filtered = Object.keys(filters).length > 0 || offset > 0;
  let entries;
  try {
    entries = await api(`/audit?${query}`);
  } catch (err) {
    const clear = filtered ? [el("p", {}, el("a", { href: "#/admin/audit" }, "Show the audit log without filters"))] : [];
    return loadFailed(heading, "Could not load the audit log", err, ...clear);
  }
  const page = entries.slice(0, AUDIT_PAGE);
  const older = el("button", { type: "button", class: "secondary", id: "older" }, "Older");
  const newer = el("button", { type: "button", class: "secondary", id: "newer" }, "Newer");
  older.disabled = entries.length <= AUDIT_PAGE;
  newer.disabled = offset === 0;
  older.addEventListener("click", () => go(auditAddress({ ...filters, offset: offset + AUDIT_PAGE })));
  newer.addEventListener("click", () => go(auditAddress({ ...filters, offset: Math.max(0, offset - AUDIT_PAGE) })));
  const summary = page.length
    ? `Entries ${offset + 1}–${offset + page.length}, newest first.`
    : filtered ? "No entries match these filters." : "No entries yet.";
  const table = el("table", { id: "audit" },
    el("thead", {}, el("tr", {},
      el("th", {}, "#"), el("th", {}, "Time"), el("th", {}, "Principal"), el("th", {}, "Action and path"),
      el("th", {}, "Session"), el("th", {}, "Outcome"), el("th", {}, "Request id"))),
    el("tbody", {}, ...page.map((e) => auditRow(e, filters))));
  table.hidden = page.length === 0;
  return [
    el("section", {}, heading,
      el("p", { class: "note" }, "Every call that changes something, with who made it and how it ended (failures marked)."),
      filterForm(filters),
      el("div", { class: "heading" },
        el("p", { id: "summary", role: "status" }, summary),
        el("nav", { class: "pager", "aria-label": "Audit log pages" }, newer, older)),
      table),
  ];
}

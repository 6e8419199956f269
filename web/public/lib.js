// What every part of the page shares: the tab's login token, calls to the
// API, building elements, the error line, and the live connections a view
// holds open (closed when another view is shown).

export const API = "/api/v0";
const errorBox = document.getElementById("error");

/** The token of this tab's login (kept for the tab only). */
export const token = {
  get: () => sessionStorage.getItem("raworc.token"),
  set: (t) => sessionStorage.setItem("raworc.token", t),
  clear: () => sessionStorage.removeItem("raworc.token"),
};

/** Thrown when a call found the login expired (the login form is shown). */
export class LoggedOut extends Error {}

/** Shows `message` (a string or an Error) in the page's error line; "" hides it. */
export function showError(message) {
  if (message instanceof LoggedOut) return;
  if (message instanceof Error) message = message.message;
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

/** Forgets this tab's login and shows the login form with `message`. */
export function endLogin(message) {
  token.clear();
  window.dispatchEvent(new CustomEvent("raworc:logged-out", { detail: message }));
}

/** A session id as a path segment. */
export const seg = (s) => encodeURIComponent(s);

/**
 * Calls the API. `body` is sent as JSON, or as it is when `raw` (a Blob or
 * File). An expired login sends the page back to the login form (the
 * `raworc:logged-out` event) and throws `LoggedOut`; other failures throw
 * the API's error text.
 */
export async function api(path, { method = "GET", body, raw } = {}) {
  const headers = { accept: "application/json" };
  if (token.get()) headers.authorization = `Bearer ${token.get()}`;
  let payload;
  if (raw !== undefined) {
    headers["content-type"] = "application/octet-stream";
    payload = raw;
  } else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(API + path, { method, headers, body: payload });
  if (!response.ok) await fail(response, `${method} ${path}`);
  return response.json().catch(() => null);
}

/** Throws for a failed call: `LoggedOut` (and the login form) for an
 * expired login, else the API's error text. */
async function fail(response, what) {
  const data = await response.json().catch(() => null);
  if (response.status === 401 && token.get()) {
    endLogin("Your login has expired; please log in again.");
    throw new LoggedOut("logged out");
  }
  throw new Error(data?.error ?? `${what} failed (${response.status})`);
}

/**
 * GETs `path` (under /api/v0) for its body as it is (a file's bytes): the
 * response, once it is known to be a success; failures throw as `api()`'s.
 */
export async function apiRaw(path) {
  const response = await fetch(API + path, { headers: { authorization: `Bearer ${token.get()}` } });
  if (!response.ok) await fail(response, `GET ${path}`);
  return response;
}

/** `/files/<path>` of a session's computer, each segment escaped. */
export const filePath = (id, path) => `/sessions/${seg(id)}/files${path.split("/").map(seg).join("/")}`;

/** Builds an element: el("td", {class: "state"}, "running"). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

/** A button running `run`, showing its error (or clearing the error line). */
export function actionButton(label, run, attrs = {}) {
  const button = el("button", { type: "button", ...attrs }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await run();
      showError("");
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A form's submit handler that shows errors and clears them on success. */
export function onSubmit(form, run) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await run(new FormData(form));
      showError("");
    } catch (err) {
      showError(err);
    }
  });
}

let open = [];
/** Keeps `conn` (anything with `close()`) until the view changes. */
export function hold(conn) {
  open.push(conn);
  return conn;
}
/** Closes what the current view held open. */
export function closeAll() {
  for (const c of open) c.close();
  open = [];
}

/** An EventSource on `path` (under /api/v0) with the login's token. */
export function eventSource(path) {
  const sep = path.includes("?") ? "&" : "?";
  return hold(new EventSource(`${API}${path}${sep}token=${encodeURIComponent(token.get())}`));
}

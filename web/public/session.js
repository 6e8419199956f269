// A session's page: the conversation with the agent's steps arriving live,
// the lifecycle actions (remix with its data/code choices among them), the
// live desktop beside it, and the files of /session/data.

import { api, apiRaw, actionButton, el, eventSource, filePath, hold, onSubmit, seg, showError, token } from "./lib.js";
import { Desktop } from "./desktop.js";
import { filesPanel } from "./files.js";

const PAGE = 1000;

/** Every item of a paged list (`after`-ordered by `seq`), past the API's page size. */
async function everything(path) {
  const all = [];
  for (;;) {
    const after = all.length ? all[all.length - 1].seq : 0;
    const page = await api(`${path}?limit=${PAGE}&after=${after}`);
    all.push(...page);
    if (page.length < PAGE) return all;
  }
}

/** A server time (RFC 3339, up to microseconds) as microseconds since the epoch. */
function timeKey(at) {
  const micros = (at.match(/\.(\d+)/)?.[1] ?? "").padEnd(6, "0").slice(0, 6);
  return Math.floor(Date.parse(at) / 1000) * 1e6 + Number(micros);
}

/** A tool call's input, briefly: the command, the action, the path. */
function describeInput(name, input = {}) {
  if (name === "bash" && input.command) return input.command;
  if (name === "bash" && input.restart) return "restart";
  if (name === "computer") {
    const parts = [input.action];
    if (input.coordinate) parts.push(`(${input.coordinate.join(", ")})`);
    if (input.text) parts.push(JSON.stringify(input.text));
    return parts.join(" ");
  }
  if (input.command && input.path) return `${input.command} ${input.path}`;
  return JSON.stringify(input);
}

/** Opens a screenshot large, over the page (Esc or a click closes it). */
function showLarge(src) {
  let viewer = document.getElementById("viewer");
  if (!viewer) {
    viewer = el("dialog", { id: "viewer", "aria-label": "Screenshot" },
      el("img", { alt: "screenshot, full size" }));
    viewer.addEventListener("click", () => viewer.close());
    document.body.append(viewer);
  }
  viewer.querySelector("img").src = src;
  viewer.showModal();
}

/** One line of the agent's work, from an event (null for other kinds). */
function stepLine(event) {
  const m = event.metadata ?? {};
  switch (event.type) {
    case "tool_use": {
      const input = describeInput(m.name, m.input);
      const line = el("li", { class: "step tool-use" }, `→ ${m.name}: ${input}`);
      const full = JSON.stringify(m.input ?? {}, null, 2);
      if (full.length > input.length + 40) {
        line.append(el("details", {}, el("summary", {}, "input"), el("pre", {}, full)));
      }
      return line;
    }
    case "tool_result": {
      const first = event.content.split("\n")[0] || "(done)";
      const line = el("li", { class: m.is_error ? "step tool-result error" : "step tool-result" },
        `${m.is_error ? "✗" : "✓"} ${first}`);
      if (event.content.includes("\n")) {
        line.append(el("details", {}, el("summary", {}, "output"), el("pre", {}, event.content)));
      }
      if (m.image_url) {
        const src = `${m.image_url}?token=${encodeURIComponent(token.get())}`;
        const open = el("button", { type: "button", class: "thumb-button", "aria-label": "Open the screenshot large" },
          el("img", { src, alt: "screenshot", class: "thumb" }));
        open.addEventListener("click", () => showLarge(src));
        line.append(" ", open);
      }
      return line;
    }
    case "thinking":
      return el("li", { class: "step thinking" },
        el("details", {}, el("summary", {}, "Thinking"), el("pre", {}, event.content)));
    case "text":
      return el("li", { class: "step text" }, event.content);
    case "error":
      return el("li", { class: "step error" }, `error: ${event.content}`);
    default:
      return null;
  }
}

function messageItem(m) {
  return el("li", { class: `message ${m.role}`, "data-seq": m.seq },
    el("strong", {}, m.role === "user" ? "You" : "Agent"), " ", m.content);
}

/** A dialog showing the output of the session's setup script. */
function setupLogDialog(id) {
  const text = el("pre", { id: "setup-output" });
  const close = el("button", { type: "button", class: "secondary" }, "Close");
  const dialog = el("dialog", { id: "setup-log", "aria-label": "Setup output" },
    el("h2", {}, "Setup output"), text, el("div", { class: "buttons" }, close));
  close.addEventListener("click", () => dialog.close());
  return {
    node: dialog,
    /** Reads /session/code/setup.log from the computer (it must run). */
    async open() {
      const response = await apiRaw(filePath(id, "/session/code/setup.log"));
      text.textContent = (await response.text()) || "(the setup script printed nothing)";
      dialog.showModal();
    },
  };
}

/** The remix dialog: a new session from this one, with what it keeps. */
function remixDialog(id) {
  const form = el("form", { method: "dialog", id: "remix", "aria-label": "Remix this session" },
    el("h2", {}, "Remix"),
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "data", checked: "" }), "Copy its data (/session/data)"),
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "code", checked: "" }), "Copy its code, instructions and setup (/session/code)"),
    el("label", {}, "Name", el("input", { name: "name" })),
    el("label", {}, "First message", el("textarea", { name: "prompt", rows: "2" })),
    el("div", { class: "buttons" },
      el("button", { type: "submit" }, "Remix"),
      el("button", { type: "button", class: "secondary", value: "cancel" }, "Cancel")));
  const dialog = el("dialog", { id: "remix-dialog" }, form);
  form.querySelector('button[value="cancel"]').addEventListener("click", () => dialog.close());
  onSubmit(form, async (data) => {
    const body = { data: Boolean(data.get("data")), code: Boolean(data.get("code")) };
    for (const key of ["name", "prompt"]) {
      const value = String(data.get(key) ?? "").trim();
      if (value) body[key] = value;
    }
    try {
      const remix = await api(`/sessions/${seg(id)}/remix`, { method: "POST", body });
      dialog.close();
      location.hash = `#/sessions/${encodeURIComponent(remix.id)}`;
    } catch (err) {
      dialog.close();
      throw err;
    }
  });
  return dialog;
}

export async function showSession(id) {
  const sid = seg(id);
  const s = await api(`/sessions/${sid}`);
  const chat = el("ol", { id: "chat", "aria-live": "polite" });
  const state = el("span", { id: "state", class: "state" }, s.state);
  const busy = el("span", { id: "busy", class: "busy" }, s.busy ? "working…" : "");
  const problem = el("p", { id: "session-error", class: "session-error", hidden: "" });
  const showProblem = (text) => { problem.textContent = text ?? ""; problem.hidden = !text; };
  showProblem(s.state === "errored" ? s.error : "");

  // The conversation: messages and the agent's steps, in the order they
  // happened (by the server's clock: a step's event may reach the page
  // before the answer to the message's own POST does).
  const place = (node, at) => {
    const key = timeKey(at);
    node.dataset.at = key;
    let before = null;
    for (let c = chat.lastElementChild; c && Number(c.dataset.at) > key; c = c.previousElementSibling) before = c;
    chat.insertBefore(node, before);
    chat.scrollTop = chat.scrollHeight;
  };
  let lastMessage = 0;
  const addMessages = (messages) => {
    for (const m of messages) {
      if (m.seq <= lastMessage) continue;
      lastMessage = m.seq;
      place(messageItem(m), m.created_at);
    }
  };
  const newMessages = () => api(`/sessions/${sid}/messages?limit=${PAGE}&after=${lastMessage}`).then(addMessages);
  const [messages, past] = await Promise.all([everything(`/sessions/${sid}/messages`), everything(`/sessions/${sid}/events`)]);
  const timeline = [
    ...messages.map((m) => ({ at: m.created_at, message: m })),
    ...past.map((e) => ({ at: e.created_at, event: e })),
  ].sort((a, b) => timeKey(a.at) - timeKey(b.at));
  // The model's last text is the reply itself (its `complete` event):
  // shown once, as the reply.
  const dropEcho = (reply) => {
    const echo = [...chat.querySelectorAll(".step.text")].findLast((t) => t.textContent === reply);
    echo?.remove();
  };
  for (const item of timeline) {
    if (item.message) addMessages([item.message]);
    else if (item.event.type === "complete") dropEcho(item.event.content);
    else {
      const line = stepLine(item.event);
      if (line) place(line, item.at);
    }
  }

  const input = el("textarea", { id: "prompt", rows: "2", "aria-label": "Message" });
  const cancel = el("button", { type: "button", id: "cancel", hidden: "" }, "Cancel");
  cancel.hidden = !s.busy;
  const form = el("form", { id: "say", "aria-label": "Message the agent" }, input, el("button", { type: "submit" }, "Send"), cancel);
  onSubmit(form, async () => {
    const content = input.value.trim();
    if (!content) return;
    const m = await api(`/sessions/${sid}/messages`, { method: "POST", body: { content } });
    addMessages([m]);
    input.value = "";
  });
  cancel.addEventListener("click", () => api(`/sessions/${sid}/cancel`, { method: "POST" }).catch(showError));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  // The desktop: view-only unless asked, since it is the agent's workplace.
  const screen = el("div", { id: "desktop", "aria-label": "The session's desktop" });
  const desktop = hold(new Desktop(id, screen));
  const control = el("input", { type: "checkbox", id: "control" });
  control.addEventListener("change", () => desktop.setControl(control.checked));
  const files = filesPanel(id);

  const remix = remixDialog(id);
  const setupLog = setupLogDialog(id);
  const lifecycle = (target) => api(`/sessions/${sid}/state`, { method: "PUT", body: { state: target } });
  // What takes the computer away lets go of its desktop first: a viewer
  // still connecting to a computer being stopped would see it fail.
  const lettingGo = async (call) => {
    desktop.want(false);
    try {
      await call();
    } catch (err) {
      desktop.want(state.textContent === "running");
      throw err;
    }
  };
  const actions = el("div", { class: "actions" },
    actionButton("Pause", () => lettingGo(() => lifecycle("paused")), { "data-action": "pause" }),
    actionButton("Resume", () => lifecycle("running"), { "data-action": "resume" }),
    actionButton("Close", () => lettingGo(() => api(`/sessions/${sid}/close`, { method: "POST" })), { "data-action": "close" }),
    actionButton("Restore", () => api(`/sessions/${sid}/restore`, { method: "POST" }), { "data-action": "restore" }),
    actionButton("Remix…", async () => remix.showModal(), { "data-action": "remix" }),
    ...(s.setup ? [actionButton("Setup output", () => setupLog.open(), { "data-action": "setup-log" })] : []),
    actionButton("Delete", async () => {
      if (!confirm("Delete this session, its computer and its disk?")) return;
      await lettingGo(() => api(`/sessions/${sid}`, { method: "DELETE" }));
      location.hash = "#/sessions";
    }, { "data-action": "delete" }));
  const parent = s.parent_id
    ? [el("p", { class: "parent" }, "Remixed from ", el("a", { href: `#/sessions/${encodeURIComponent(s.parent_id)}` }, s.parent_id))]
    : [];

  const view = [
    el("p", {}, el("a", { href: "#/sessions" }, "← Sessions")),
    el("h1", {}, s.name ?? s.id, " ", state, " ", busy),
    ...parent,
    problem,
    actions,
    el("div", { class: "session" },
      el("section", { class: "talk" }, chat, form, files.node),
      el("section", { class: "screen" },
        el("label", { class: "check" }, control, "Take control"), screen)),
    remix,
    setupLog.node,
  ];

  // The agent's steps and the session's state, live from the last event read.
  const after = past.length ? past[past.length - 1].seq : 0;
  const source = eventSource(`/sessions/${sid}/events/stream?after=${after}&deltas=true`);
  // The model's text and thinking as they stream (not stored): one live
  // line per block, replaced by the stored steps once the turn is whole.
  const live = new Map();
  const clearLive = () => {
    for (const line of live.values()) line.node.remove();
    live.clear();
  };
  source.addEventListener("delta", (e) => {
    const d = JSON.parse(e.data);
    const key = `${d.kind}:${d.index}`;
    let line = live.get(key);
    if (line && line.attempt !== d.attempt) {
      // The model call was tried again: its text starts over.
      line.node.remove();
      line = null;
    }
    if (!line) {
      const text = el("span", { class: "live-text" });
      const node = el("li", { class: `step live ${d.kind}` }, d.kind === "thinking" ? "Thinking… " : "", text);
      line = { node, text, attempt: d.attempt };
      live.set(key, line);
      chat.append(node);
    }
    line.text.textContent += d.text;
    chat.scrollTop = chat.scrollHeight;
  });
  const follow = (current, isBusy) => {
    state.textContent = current;
    busy.textContent = isBusy ? "working…" : "";
    cancel.hidden = !isBusy;
    desktop.want(current === "running");
    files.setAvailable(current === "running");
  };
  for (const kind of ["thinking", "text", "tool_use", "tool_result", "error", "complete", "state"]) {
    source.addEventListener(kind, (e) => {
      // The stream's own "error" (a lost connection, retried by itself)
      // carries no data; the agent's error events do.
      if (typeof e.data !== "string") return;
      const event = JSON.parse(e.data);
      if (event.type !== "state") clearLive();
      if (event.type === "state") {
        follow(event.metadata.state, event.metadata.busy);
        if (event.metadata.state === "deleted") {
          source.close();
          showProblem("This session was deleted.");
          return;
        }
        if (event.metadata.state !== "errored") showProblem("");
        else api(`/sessions/${sid}`).then((now) => showProblem(now.error ?? "The session failed.")).catch(showError);
        // A message sent from elsewhere (the CLI, the API) shows up too.
        newMessages().catch(showError);
        return;
      }
      if (event.type === "complete") {
        dropEcho(event.content);
        newMessages().catch(showError);
        return;
      }
      const line = stepLine(event);
      if (line) {
        place(line, event.created_at);
      }
    });
  }
  follow(s.state, s.busy);
  return view;
}

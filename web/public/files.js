// The files of a session's /session/data: list (folders open in place),
// upload from this machine, download. Only while the computer runs: files
// are read and written by the computer's own user, inside it.

import { api, apiRaw, el, filePath, seg, showError } from "./lib.js";

const ROOT = "/session/data";

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** The file at `path` in the computer, saved by the browser as `name`. */
async function download(id, path, name) {
  const response = await apiRaw(filePath(id, path));
  const url = URL.createObjectURL(await response.blob());
  const a = el("a", { href: url, download: name, hidden: "" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/** The panel, and `setAvailable(running)` to follow the session's state. */
export function filesPanel(id) {
  let dir = ROOT;
  let available = null; // unknown until the first setAvailable
  const where = el("span", { id: "files-dir" }, dir);
  const body = el("tbody");
  const note = el("p", { class: "note" });
  const picker = el("input", { type: "file", multiple: "", id: "upload", "aria-label": "Upload files" });
  const refresh = el("button", { type: "button", class: "secondary" }, "Refresh");

  const list = async () => {
    if (!available) return;
    const answer = await api(`/sessions/${seg(id)}/files?path=${encodeURIComponent(dir)}`);
    const rows = [];
    if (dir !== ROOT) {
      const up = el("button", { type: "button", class: "link" }, "..");
      up.addEventListener("click", () => { dir = dir.replace(/\/[^/]+$/, ""); where.textContent = dir; list().catch(showError); });
      rows.push(el("tr", {}, el("td", {}, up), el("td", {}), el("td", {})));
    }
    for (const entry of answer.entries) {
      const path = `${dir}/${entry.name}`;
      const open = el("button", { type: "button", class: "link", "data-kind": entry.kind }, entry.kind === "dir" ? `${entry.name}/` : entry.name);
      open.addEventListener("click", () => {
        if (entry.kind === "dir") {
          dir = path;
          where.textContent = dir;
          list().catch(showError);
        } else {
          download(id, path, entry.name).then(() => showError("")).catch(showError);
        }
      });
      rows.push(el("tr", { "data-name": entry.name }, el("td", {}, open),
        el("td", {}, entry.kind === "dir" ? "" : size(entry.size)),
        el("td", {}, new Date(entry.modified).toLocaleString([], { dateStyle: "short", timeStyle: "short" }))));
    }
    body.replaceChildren(...rows);
    note.textContent = answer.entries.length ? (answer.truncated ? "Only the first entries are listed." : "") : "No files here yet.";
  };

  picker.addEventListener("change", async () => {
    try {
      for (const file of picker.files) {
        await api(filePath(id, `${dir}/${file.name}`), { method: "PUT", raw: file });
      }
      picker.value = "";
      await list();
      showError("");
    } catch (err) {
      showError(err);
    }
  });
  refresh.addEventListener("click", () => list().then(() => showError("")).catch(showError));

  const node = el("section", { class: "files", "aria-label": "Files" },
    el("h2", {}, "Files ", where),
    el("div", { class: "file-actions" }, el("label", { class: "upload" }, "Upload ", picker), refresh),
    el("table", { id: "files" }, el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Size"), el("th", {}, "Modified"))), body),
    note);
  return {
    node,
    setAvailable(running) {
      if (running === available) return;
      available = running;
      picker.disabled = !running;
      refresh.disabled = !running;
      if (running) list().catch(showError);
      else {
        body.replaceChildren();
        note.textContent = "The files can be read while the computer runs.";
      }
    },
  };
}

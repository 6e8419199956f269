// The session page in a real browser, on a real computer with the mock
// agent: a session created from the form with setup and a secret; the
// desktop's canvas shows real pixels; a message is answered with the
// agent's steps shown live; text typed into the desktop through the page
// shows in the API's screenshot; files uploaded, listed and downloaded;
// pause, resume, close and restore; a remix keeping its data only; delete.
// Run by `crates/raworc/tests/web.rs`:
//   node tests/session.mjs BASE_URL ADMIN_PASSWORD SHOTS_DIR

import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { check, desktopDrawn, logIn, pageApi, start } from "./browser.mjs";

const [base, adminPass, shots] = process.argv.slice(2);
const run = await start(shots);
const shot = (p, name) => run.shot(p, name);

/** The text on the session's desktop: its screenshot from the API, read by OCR. */
async function screenText(p, id) {
  const png = await p.evaluate(async (id) => {
    const r = await fetch(`/api/v0/sessions/${id}/screenshot`, {
      headers: { authorization: `Bearer ${sessionStorage.getItem("raworc.token")}` },
    });
    const bytes = new Uint8Array(await r.arrayBuffer());
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
  }, id);
  const file = `${shots}/api-screenshot.png`;
  writeFileSync(file, Buffer.from(png, "base64"));
  return execFileSync("tesseract", [file, "stdout"], { stdio: ["ignore", "pipe", "ignore"] }).toString();
}

try {
  const p = await run.page();
  await logIn(p, base, "admin", adminPass);

  // The API, called as the page's operator (for checks the page does not show).
  const request = (method, path, body) => pageApi(p, method, path, body);
  const sessionId = () => decodeURIComponent(new URL(p.url()).hash.split("/")[2]);
  const call = (path, body) => request("POST", `sessions/${sessionId()}/${path}`, body);

  // A session from the form, with instructions, a setup script and a
  // secret; its state turns running in the list by itself.
  await p.getByLabel("Name").fill("desk");
  await p.getByLabel("Instructions").fill("Be brief.");
  await p.getByLabel("Setup script").fill("echo prepared | tee /session/data/setup-ran.txt");
  await p.getByRole("button", { name: "Add a secret" }).click();
  await p.getByLabel("Secret 1 name").fill("WEB_TOKEN");
  await p.getByLabel("Secret 1 value").fill("s3cret-from-the-form");
  await p.getByRole("button", { name: "Create session" }).click();
  await p.locator("#create .done", { hasText: "desk" }).waitFor();
  const row = p.locator("#sessions tbody tr", { hasText: "desk" });
  await row.locator(".state", { hasText: "running" }).waitFor({ timeout: 120000 });
  await shot(p, "running");

  // The session page: the desktop's canvas draws the real desktop.
  await row.getByRole("link", { name: "desk" }).click();
  await p.locator("#desktop canvas").waitFor();
  await desktopDrawn(p);
  await shot(p, "desktop");

  // A message, answered by the agent with its steps shown as they happen.
  await p.getByLabel("Message", { exact: true }).fill("run `echo hi-from-the-web`");
  await p.getByLabel("Message", { exact: true }).press("Enter");
  await p.locator(".message.user", { hasText: "hi-from-the-web" }).waitFor();
  await p.locator(".step.tool-use", { hasText: "bash" }).waitFor({ timeout: 60000 });
  await p.locator(".message.assistant", { hasText: "hi-from-the-web" }).waitFor({ timeout: 60000 });
  await shot(p, "answered");

  // A screenshot step shows a thumbnail, which opens large over the page.
  await p.getByLabel("Message", { exact: true }).fill("take a screenshot");
  await p.getByLabel("Message", { exact: true }).press("Enter");
  const thumb = p.getByRole("button", { name: "Open the screenshot large" }).last();
  await thumb.waitFor({ timeout: 60000 });
  await thumb.click();
  await p.waitForFunction(() => {
    const img = document.querySelector("#viewer[open] img");
    return img && img.complete && img.naturalWidth === 1024;
  }, null, { timeout: 10000 });
  await shot(p, "screenshot-large");
  await p.keyboard.press("Escape");
  await p.locator("#viewer[open]").waitFor({ state: "detached" }).catch(() => {});
  check(!(await p.locator("#viewer").evaluate((d) => d.open)), "Esc closes the large screenshot");

  // A task can be cancelled from the page while the agent works.
  await p.getByLabel("Message", { exact: true }).fill("run `sleep 3; echo slow-done`");
  await p.getByLabel("Message", { exact: true }).press("Enter");
  await p.getByRole("button", { name: "Cancel" }).click({ timeout: 30000 });
  await p.locator(".message.assistant", { hasText: /cancelled/ }).waitFor({ timeout: 60000 });
  await p.getByRole("button", { name: "Cancel" }).waitFor({ state: "hidden" });
  await shot(p, "cancelled");

  // The form's setup ran before the session was running, and its secret
  // is in the computer; the instructions are the session's.
  const created = await request("GET", `sessions/${sessionId()}`);
  check(created.instructions === "Be brief." && created.secrets.includes("WEB_TOKEN"), `the form's fields: ${JSON.stringify(created)}`);
  const inside = await call("exec", { command: "cat /session/data/setup-ran.txt /session/secrets/WEB_TOKEN" });
  check(inside.stdout === "prepared\ns3cret-from-the-form", `setup and secret in the computer: ${JSON.stringify(inside)}`);

  // The setup's output can be read from the page.
  await p.getByRole("button", { name: "Setup output" }).click();
  await p.locator("#setup-output", { hasText: "prepared" }).waitFor();
  await shot(p, "setup-output");
  await p.keyboard.press("Escape");

  // Take control, and type into a terminal on the desktop (a large font,
  // to be read back off a screenshot).
  await call("exec", {
    command: "xterm -title typing-target -fa Monospace -fs 16 -geometry 40x6+40+40 -e sh -c 'cat > /tmp/typed' >/dev/null 2>&1 &",
  });
  // Mapped, and the active window (clicked through the API until it is).
  let active = false;
  for (let i = 0; i < 100 && !active; i++) {
    const info = await call("exec", { command: "xwininfo -name typing-target 2>/dev/null | grep -q IsViewable && echo mapped || true" });
    if (info.stdout.includes("mapped")) {
      await call("computer", { action: "left_click", coordinate: [120, 100] });
      const out = await call("exec", { command: "xprop -root _NET_ACTIVE_WINDOW; xwininfo -name typing-target | grep 'Window id'" });
      const activeId = out.stdout.match(/window id # (0x[0-9a-f]+)/)?.[1];
      const target = out.stdout.match(/Window id: (0x[0-9a-f]+)/)?.[1];
      active = Boolean(activeId && target && parseInt(activeId, 16) === parseInt(target, 16));
    }
    if (!active) await p.waitForTimeout(100);
  }
  if (!active) throw new Error("the terminal never became the active window");
  await p.getByLabel("Take control").check();
  await p.locator('#desktop[data-connected="control"]').waitFor();
  // Into the canvas, where the terminal is (scaled to the pane), then the keyboard.
  const box = await p.locator("#desktop canvas").boundingBox();
  const scale = box.width / 1024;
  await p.mouse.click(box.x + 120 * scale, box.y + 100 * scale);
  await p.keyboard.type("typed in the page");
  await p.keyboard.press("Enter");
  let typed = "";
  for (let i = 0; i < 100 && !typed.includes("typed in the page"); i++) {
    typed = (await call("exec", { command: "cat /tmp/typed 2>/dev/null || true" })).stdout;
    if (!typed.includes("typed in the page")) await p.waitForTimeout(100);
  }
  if (!typed.includes("typed in the page")) throw new Error(`the typed text did not arrive: ${JSON.stringify(typed)}`);
  // And the desktop shows it: the API's screenshot, read by OCR.
  let seen = "";
  for (let i = 0; i < 50 && !/typed in the page/.test(seen); i++) {
    seen = await screenText(p, sessionId());
  }
  check(/typed in the page/.test(seen), `the API's screenshot shows the typed text; OCR read: ${JSON.stringify(seen)}`);
  await shot(p, "typed");

  // Files: one uploaded from this machine into /session/data is listed
  // (beside the setup's), and downloads with the same bytes.
  await p.locator("#files tr", { hasText: "setup-ran.txt" }).waitFor();
  await p.getByLabel("Upload files").setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("uploaded from the page\n") });
  await p.locator("#files tr", { hasText: "notes.txt" }).waitFor();
  const inComputer = await call("exec", { command: "cat /session/data/notes.txt" });
  check(inComputer.stdout === "uploaded from the page\n", `the upload is in the computer: ${JSON.stringify(inComputer)}`);
  const downloading = p.waitForEvent("download");
  await p.locator("#files button", { hasText: "notes.txt" }).click();
  const download = await downloading;
  check(download.suggestedFilename() === "notes.txt", `download named ${download.suggestedFilename()}`);
  const saved = `${shots}/downloaded-notes.txt`;
  await download.saveAs(saved);
  check(readFileSync(saved, "utf8") === "uploaded from the page\n", "the download has the file's bytes");
  await shot(p, "files");

  // Pause, resume, close and restore from the page; the state follows
  // live, and the desktop comes back by itself after the restore.
  const state = p.locator("#state");
  await p.getByRole("button", { name: "Pause" }).click();
  await state.filter({ hasText: /^paused$/ }).waitFor({ timeout: 30000 });
  await p.getByRole("button", { name: "Resume" }).click();
  await state.filter({ hasText: /^running$/ }).waitFor({ timeout: 30000 });
  await p.getByRole("button", { name: "Close" }).click();
  await state.filter({ hasText: /^closed$/ }).waitFor({ timeout: 60000 });
  await shot(p, "closed");
  await p.getByRole("button", { name: "Restore" }).click();
  await state.filter({ hasText: /^running$/ }).waitFor({ timeout: 120000 });
  await p.locator("#desktop[data-connected]:not([data-connected=''])").waitFor({ timeout: 30000 });
  // An action the state does not allow is refused, and the page says why.
  await p.getByRole("button", { name: "Restore" }).click();
  await p.locator("#error").filter({ hasText: /restore/i }).waitFor();
  await shot(p, "restored");

  // A remix that keeps the data but not the code: a new session, whose
  // page lists the uploaded file, and which has no instructions.
  const parentId = sessionId();
  await p.getByRole("button", { name: "Remix…" }).click();
  await p.getByLabel("Copy its code, instructions and setup (/session/code)").uncheck();
  await p.locator("#remix").getByLabel("Name").fill("desk-remix");
  await p.locator("#remix").getByRole("button", { name: "Remix" }).click();
  await p.locator("h1", { hasText: "desk-remix" }).waitFor();
  check(sessionId() !== parentId, "the remix has a page of its own");
  await p.locator(".parent", { hasText: parentId }).waitFor();
  await state.filter({ hasText: /^running$/ }).waitFor({ timeout: 120000 });
  await p.locator("#files tr", { hasText: "notes.txt" }).waitFor({ timeout: 30000 });
  const remix = await request("GET", `sessions/${sessionId()}`);
  check(remix.parent_id === parentId && remix.instructions == null, `the remix kept no code: ${JSON.stringify(remix)}`);
  await shot(p, "remix");

  // Delete the remix from its page (after the confirmation): back to the
  // list, where it is gone and its parent is still there.
  const remixId = sessionId();
  p.once("dialog", (d) => d.accept());
  await p.getByRole("button", { name: "Delete" }).click();
  await p.locator("#sessions").waitFor();
  await p.locator(`#sessions tr[data-id="${remixId}"]`).waitFor({ state: "detached", timeout: 30000 });
  await p.locator(`#sessions tr[data-id="${parentId}"]`).waitFor();
  // (Asked from here, not the page: its console would log the 404.)
  const pageToken = await p.evaluate(() => sessionStorage.getItem("raworc.token"));
  const gone = await fetch(`${base}/api/v0/sessions/${remixId}`, { headers: { authorization: `Bearer ${pageToken}` } });
  check(gone.status === 404, `the deleted remix is gone: ${gone.status}`);
  await shot(p, "deleted");
} catch (err) {
  run.problems.unshift(err.message);
}

// The refused restore makes the browser log its failed request, on purpose.
await run.finish("session page", /Failed to load resource: the server responded with a status of 409/);

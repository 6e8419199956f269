// The session page in a real browser, on a real computer with the mock
// agent: the desktop's canvas shows real pixels, a message is answered
// with the agent's steps shown live. Run by `crates/raworc/tests/web.rs`:
//   node tests/session.mjs BASE_URL ADMIN_PASSWORD SHOTS_DIR

import { start } from "./browser.mjs";

const [base, adminPass, shots] = process.argv.slice(2);
const run = await start(shots);
const shot = (p, name) => run.shot(p, name);

try {
  const p = await run.page();
  await p.goto(base + "/");
  await p.getByLabel("Operator").fill("admin");
  await p.getByLabel("Password").fill(adminPass);
  await p.getByRole("button", { name: "Log in" }).click();
  await p.locator("#sessions").waitFor();

  // A session from the form; its state turns running in the list by itself.
  await p.getByLabel("Name").fill("desk");
  await p.getByRole("button", { name: "Create session" }).click();
  const row = p.locator("#sessions tbody tr", { hasText: "desk" });
  await row.locator(".state", { hasText: "running" }).waitFor({ timeout: 120000 });
  await shot(p, "running");

  // The session page: the desktop's canvas draws the real desktop.
  await row.getByRole("link", { name: "desk" }).click();
  await p.locator("#desktop canvas").waitFor();
  await p.waitForFunction(() => {
    const canvas = document.querySelector("#desktop canvas");
    if (!canvas || !canvas.width) return false;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4 * 97) colours.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    return colours.size > 12;
  }, null, { timeout: 30000 });
  await shot(p, "desktop");

  // A message, answered by the agent with its steps shown as they happen.
  await p.getByLabel("Message", { exact: true }).fill("run `echo hi-from-the-web`");
  await p.getByLabel("Message", { exact: true }).press("Enter");
  await p.locator(".message.user", { hasText: "hi-from-the-web" }).waitFor();
  await p.locator(".step.tool-use", { hasText: "bash" }).waitFor({ timeout: 60000 });
  await p.locator(".message.assistant", { hasText: "hi-from-the-web" }).waitFor({ timeout: 60000 });
  await shot(p, "answered");

  // Take control, and type into a terminal on the desktop.
  const call = (path, body) => p.evaluate(async ([path, body]) => {
    const token = sessionStorage.getItem("raworc.token");
    const id = decodeURIComponent(location.hash.split("/")[2]);
    const r = await fetch(`/api/v0/sessions/${id}/${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return r.json();
  }, [path, body]);
  await call("exec", {
    command: "xterm -title typing-target -geometry 60x8+40+40 -e sh -c 'cat > /tmp/typed' >/dev/null 2>&1 &",
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
  await shot(p, "typed");

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

  // Back to the list.
  await p.getByRole("link", { name: "← Sessions" }).click();
  await p.locator("#sessions").waitFor();
} catch (err) {
  run.problems.unshift(err.message);
}

// The refused restore makes the browser log its failed request, on purpose.
await run.finish("session page", /Failed to load resource: the server responded with a status of 409/);

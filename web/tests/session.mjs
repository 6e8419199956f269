// The session page in a real browser, on a real computer with the mock
// agent: the desktop's canvas shows real pixels, a message is answered
// with the agent's steps shown live. Run by `crates/raworc/tests/web.rs`:
//   node tests/session.mjs BASE_URL ADMIN_PASSWORD SHOTS_DIR

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, adminPass, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
let step = 0;
const shot = async (p, name) => {
  step += 1;
  await p.screenshot({ path: `${shots}/${String(step).padStart(2, "0")}-${name}.png` });
};

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const p = await context.newPage();
  p.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  p.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
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

  // Back to the list.
  await p.getByRole("link", { name: "← Sessions" }).click();
  await p.locator("#sessions").waitFor();
} catch (err) {
  problems.unshift(err.message);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`session page: ${step} steps passed`);

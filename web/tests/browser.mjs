// What both browser tests share: Debian's Chromium launched as it must
// be here (headless, no sandbox as root, no background
// networking), pages that record console errors, numbered screenshots,
// and the verdict at the end.

import { chromium } from "playwright-core";
import { mkdirSync, rmSync } from "node:fs";

/** A browser session of one test, saving screenshots into `shots`. */
export async function start(shots) {
  rmSync(shots, { recursive: true, force: true }); // this run's screenshots only
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
  return {
    problems,
    /** A new page (1280x800 unless `viewport` says) whose console errors count as problems. */
    async page(viewport = { width: 1280, height: 800 }) {
      const context = await browser.newContext({ viewport });
      const p = await context.newPage();
      p.on("console", (m) => { if (m.type() === "error") problems.push(`console (after step ${step}): ${m.text()}`); });
      p.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      // Which request a "Failed to load resource" line is about.
      p.on("response", (r) => { if (r.status() >= 400) console.error(`(${r.status()} ${r.request().method()} ${r.url()})`); });
      return p;
    },
    /**
     * Saves the page as the next numbered screenshot; a page wider than
     * its window (something cut off or scrolled sideways) is a problem.
     */
    async shot(p, name) {
      step += 1;
      const [wide, window] = await p.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
      if (wide > window) problems.push(`${name}: the page is ${wide}px wide in a ${window}px window`);
      await p.screenshot({ path: `${shots}/${String(step).padStart(2, "0")}-${name}.png` });
    },
    /**
     * Closes the browser and exits: non-zero with the problems, except
     * the failed requests the test provoked on purpose (`provoked`).
     */
    async finish(label, provoked = null) {
      await browser.close();
      const unexpected = problems.filter((m) => !provoked?.test(m));
      if (unexpected.length) {
        console.error(unexpected.join("\n"));
        process.exit(1);
      }
      console.log(`${label}: ${step} steps passed`);
    },
  };
}

/**
 * Waits until the desktop's canvas (the first one matching `canvas`) shows
 * a real picture: many colours, not a blank or a single-colour fill.
 */
export async function desktopDrawn(p, canvas = "#desktop canvas") {
  await p.waitForFunction((selector) => {
    const c = document.querySelector(selector);
    if (!c || !c.width) return false;
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4 * 97) colours.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    return colours.size > 12;
  }, canvas, { timeout: 30000 });
}

/** Fails the test with `what` unless `ok`. */
export function check(ok, what) {
  if (!ok) throw new Error(what);
}

/** Logs in at `base` from the form (with the keyboard) and waits for the sessions list. */
export async function logIn(p, base, name, pass) {
  await p.goto(base + "/");
  await p.getByLabel("Operator").fill(name);
  await p.getByLabel("Password").fill(pass);
  await p.getByLabel("Password").press("Enter");
  await p.locator("#sessions").waitFor();
}

/**
 * Calls the API from the page, as its logged-in operator (for what the
 * page does not show); the answer's JSON, or null.
 */
export function pageApi(p, method, path, body) {
  return p.evaluate(async ([method, path, body]) => {
    const headers = { authorization: `Bearer ${sessionStorage.getItem("raworc.token")}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(`/api/v0/${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return r.json().catch(() => null);
  }, [method, path, body]);
}

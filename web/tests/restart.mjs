// The session page across a restart of the server: the desktop and the
// agent's live steps (thinking, tool calls, the reply; from a scripted
// model) come back by themselves, without a reload. Run by
// `crates/raworc/tests/web.rs`, which restarts the server when asked:
//   node tests/restart.mjs BASE_URL ADMIN_PASSWORD SHOTS_DIR SESSION_ID
// It prints "@restart" and waits for a line on stdin once the server is back.

import { createInterface } from "node:readline";
import { check, desktopDrawn, logIn, start } from "./browser.mjs";

const [base, adminPass, shots, id] = process.argv.slice(2);
const run = await start(shots);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the test to do `what` and waits until it says it is done. */
async function ask(what) {
  console.log(`@${what}`);
  const answer = await lines.next();
  if (answer.done) throw new Error(`no answer to @${what}`);
}

try {
  const p = await run.page();
  await logIn(p, base, "admin", adminPass);
  await p.goto(`${base}/#/sessions/${encodeURIComponent(id)}`);
  await p.locator('#desktop[data-connected="view"]').waitFor({ timeout: 30000 });
  await desktopDrawn(p, "#desktop canvas:not([data-old])");
  await run.shot(p, "before");
  await p.evaluate(() => {
    const pane = document.querySelector("#desktop");
    pane.querySelector("canvas").dataset.old = "yes";
    // Every change of the pane's connection, to show that it was lost.
    window.desktopStates = [];
    new MutationObserver(() => window.desktopStates.push(pane.dataset.connected))
      .observe(pane, { attributes: true, attributeFilter: ["data-connected"] });
  });

  await ask("restart");
  // The page lost the server (its desktop said so) and found it again.
  await p.locator('#desktop[data-connected="view"]').waitFor({ timeout: 60000 });
  const states = await p.evaluate(() => window.desktopStates);
  check(states.includes(""), `the page never saw the desktop go: ${states}`);
  // A new connection draws a new canvas (the old one was marked before).
  await desktopDrawn(p, "#desktop canvas:not([data-old])");
  // The agent's steps stream again: a message sent now is answered live,
  // the model's thinking folded (it opens), its tool call and the reply.
  // Every live line (the model's text as it streams) is recorded with the
  // text it had when the stored step replaced it.
  await p.evaluate(() => {
    window.liveLines = [];
    new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.removedNodes) {
          if (node.classList?.contains("live")) window.liveLines.push([node.className, node.textContent]);
        }
      }
    }).observe(document.querySelector("#chat"), { childList: true });
  });
  await p.getByLabel("Message", { exact: true }).fill("Run the command, please.");
  await p.getByLabel("Message", { exact: true }).press("Enter");
  const thinking = p.locator(".step.thinking");
  await thinking.waitFor({ timeout: 60000 });
  await thinking.getByText("Thinking").click();
  await thinking.getByText("The page asked for a command.").waitFor();
  await p.locator(".step.tool-use", { hasText: "bash: echo after-the-restart" }).waitFor({ timeout: 60000 });
  await p.locator(".step.tool-result", { hasText: "after-the-restart" }).waitFor({ timeout: 60000 });
  await p.locator(".message.assistant", { hasText: "Done after the restart." }).waitFor({ timeout: 60000 });
  await run.shot(p, "after");
  // The thinking and the reply were shown live first, then replaced.
  const lines = await p.evaluate(() => window.liveLines);
  const shown = JSON.stringify(lines);
  check(lines.some(([c, t]) => c.includes("thinking") && t === "Thinking… The page asked for a command."), `no live thinking: ${shown}`);
  check(lines.some(([c, t]) => c.includes("text") && t === "Done after the restart."), `no live reply: ${shown}`);
  check(!(await p.locator("#chat .live").count()), "live lines are left after the reply");
  // In the order it happened, live and after a reload alike.
  const order = () => p.locator("#chat > li").evaluateAll((items) => items.map((i) => i.className));
  const live = await order();
  const expected = ["message user", "step thinking", "step tool-use", "step tool-result", "message assistant"];
  check(JSON.stringify(live.slice(-5)) === JSON.stringify(expected), `live order: ${live}`);
  await p.reload();
  await p.locator(".message.assistant", { hasText: "Done after the restart." }).waitFor();
  const reloaded = await order();
  check(JSON.stringify(reloaded) === JSON.stringify(live), `after a reload: ${reloaded}, live: ${live}`);
} catch (err) {
  run.problems.unshift(err.message);
}

// While the server was away the browser logged its failed connections.
// noVNC logs each failed attempt as it retries.
await run.finish("restart", /ERR_CONNECTION_REFUSED|WebSocket connection to .* failed|Failed to load resource|Failed when connecting/);
process.exit(0);

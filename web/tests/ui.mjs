// End-to-end test of the web page in a real browser (Debian's Chromium
// driven by Playwright), against a running server. Run by the server's
// test `web.rs`, which starts the server and passes:
//   node tests/ui.mjs BASE_URL ADMIN_PASSWORD USER USER_PASSWORD SHOTS_DIR
// Exits non-zero (with the reason) at the first thing that is not as a
// person would expect; saves a screenshot of each step in SHOTS_DIR.

import { check, pageApi, start } from "./browser.mjs";

const [base, adminPass, user, userPass, shots] = process.argv.slice(2);
const run = await start(shots);
const page = () => run.page();
const shot = (p, name) => run.shot(p, name);

async function login(p, name, pass) {
  await p.goto(base + "/");
  check((await p.title()).includes("Raworc"), `the title says Raworc: ${await p.title()}`);
  await p.getByLabel("Operator").fill(name);
  await p.getByLabel("Password").fill(pass);
  await shot(p, `login-${name}`);
  await p.getByLabel("Password").press("Enter"); // usable from the keyboard
  await p.locator("#sessions").waitFor();
}

async function rows(p) {
  return p.locator("#sessions tbody tr td:first-child").allInnerTexts();
}

try {
  // A wrong password is shown in the page. (This operator's pages are a
  // laptop's screen; the admin's below are 1280x800.)
  const first = await run.page({ width: 1366, height: 768 });
  await first.goto(base + "/");
  await first.getByLabel("Operator").fill(user);
  await first.getByLabel("Password").fill("not-the-password");
  await first.getByRole("button", { name: "Log in" }).click();
  await first.locator("#error").filter({ hasText: /password|invalid|credentials/i }).waitFor();
  await shot(first, "wrong-password");

  // The user sees only their own sessions, and a new one appears at once.
  await login(first, user, userPass);
  check((await first.locator("#who").innerText()).includes(user), "the page names who is logged in");
  check((await rows(first)).length === 0, `a new user has no sessions: ${await rows(first)}`);
  // From the keyboard only: type the name, Tab to the button, Enter.
  await first.getByLabel("Name").focus();
  await first.keyboard.type("from-the-form");
  let onButton = false;
  for (let i = 0; i < 20 && !onButton; i++) {
    await first.keyboard.press("Tab");
    onButton = await first.evaluate(() => document.activeElement?.textContent === "Create session");
  }
  check(onButton, "Tab reaches the create button");
  await first.keyboard.press("Enter");
  await first.locator("#sessions tbody tr", { hasText: "from-the-form" }).waitFor();
  check(!(await rows(first)).includes("admins-session"), "another operator's session is not listed");
  await shot(first, "user-sessions");

  // The form's other fields: setup, secrets as rows, internet access.
  await first.getByLabel("Name").fill("with-extras");
  await first.getByLabel("Setup script").fill("echo ready > /session/data/ready");
  await first.getByRole("button", { name: "Add a secret" }).click();
  await first.getByLabel("Secret 1 name").fill("API_KEY");
  await first.getByLabel("Secret 1 value").fill("value-one");
  await first.getByRole("button", { name: "Add a secret" }).click();
  await first.getByLabel("Secret 2 name").fill("OTHER");
  await first.getByLabel("Secret 2 value").fill("value-two");
  await first.getByLabel("Internet access (outbound)").check();
  await shot(first, "create-form");
  await first.getByRole("button", { name: "Create session" }).click();
  const extras = first.locator("#sessions tbody tr", { hasText: "with-extras" });
  await extras.waitFor();
  check((await extras.innerText()).includes("internet"), "the list says the session has internet access");
  const made = await pageApi(first, "GET", `sessions/${await extras.getAttribute("data-id")}`);
  check(made.setup === "echo ready > /session/data/ready" && made.network === "egress"
    && JSON.stringify([...made.secrets].sort()) === '["API_KEY","OTHER"]', `the form's fields were sent: ${JSON.stringify(made)}`);
  check((await first.locator(".secret").count()) === 0, "the secrets' rows are emptied after the create");
  // A secret without a name is refused in the page, and nothing is created.
  const before = (await rows(first)).length;
  await first.getByLabel("Name").fill("nameless-secret");
  await first.getByRole("button", { name: "Add a secret" }).click();
  await first.getByLabel("Secret 1 value").fill("orphan");
  await first.getByRole("button", { name: "Create session" }).click();
  await first.locator("#error").filter({ hasText: /secret.*name/i }).waitFor();
  check((await rows(first)).length === before, "nothing is created from a refused form");
  await shot(first, "secret-without-name");
  await first.getByRole("button", { name: "Remove secret 1" }).click();

  // An admin sees every session, and changes made elsewhere arrive live.
  const admin = await page();
  await login(admin, "admin", adminPass);
  const names = await rows(admin);
  check(names.includes("admins-session") && names.includes("from-the-form"), `the admin sees all: ${names}`);
  await pageApi(admin, "POST", "sessions", { name: "made-elsewhere" });
  await admin.locator("#sessions tbody tr", { hasText: "made-elsewhere" }).waitFor({ timeout: 10000 });
  await shot(admin, "admin-live");

  // The list filtered by state: the filter is in the address (a reload
  // keeps it), and a session that comes into that state arrives live.
  await admin.getByLabel("Show sessions in state").selectOption("closed");
  await admin.waitForURL(/#\/sessions\?state=closed$/);
  await admin.locator("#none", { hasText: "No closed sessions." }).waitFor();
  check((await rows(admin)).length === 0, `no closed sessions yet: ${await rows(admin)}`);
  const elsewhere = (await pageApi(admin, "GET", "sessions")).find((s) => s.name === "made-elsewhere");
  await pageApi(admin, "POST", `sessions/${elsewhere.id}/close`);
  await admin.locator("#sessions tbody tr", { hasText: "made-elsewhere" }).waitFor({ timeout: 10000 });
  check((await rows(admin)).length === 1 && await admin.locator("#none").isHidden(), "only the closed session is listed");
  await admin.reload();
  await admin.locator("#sessions tbody tr", { hasText: "made-elsewhere" }).waitFor();
  check((await admin.getByLabel("Show sessions in state").inputValue()) === "closed", "the filter survives a reload");
  check((await rows(admin)).length === 1, `after the reload, the closed one only: ${await rows(admin)}`);
  await shot(admin, "filtered");
  await admin.getByLabel("Show sessions in state").selectOption("");
  await admin.locator("#sessions tbody tr", { hasText: "admins-session" }).waitFor();

  // The API's error is shown in the page (a name that is too long).
  await admin.getByLabel("Name").fill("x".repeat(300));
  await admin.getByRole("button", { name: "Create session" }).click();
  await admin.locator("#error").filter({ hasText: /name/i }).waitFor();
  await shot(admin, "api-error");

  // Logging out goes back to the login form, saying so.
  await first.getByRole("button", { name: "Log out" }).click();
  await first.locator("#login").waitFor();
  await first.locator("#error").filter({ hasText: /logged out/i }).waitFor();
  await shot(first, "logged-out");

  // A token that is no longer valid sends the page back to the login.
  await admin.evaluate(() => sessionStorage.setItem("raworc.token", "expired.or.forged"));
  await admin.reload();
  await admin.locator("#login").waitFor();
  await admin.locator("#error").filter({ hasText: /expired/i }).waitFor();
  await shot(admin, "expired");
} catch (err) {
  run.problems.unshift(err.message);
}

// The wrong password, the expired token (401) and the too-long name (422)
// make the browser log their failed requests, on purpose; nothing else may.
await run.finish("web page", /Failed to load resource: the server responded with a status of (401|422)/);

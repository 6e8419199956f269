// End-to-end test of the admin pages in a real browser (Debian's Chromium
// driven by Playwright), against a running server. Run by the server's
// test `web.rs`, which starts the server (with more than one page of audit
// entries) and passes:
//   node tests/admin.mjs BASE_URL ADMIN_PASSWORD SHOTS_DIR
// Exits non-zero (with the reason) at the first thing that is not as a
// person would expect; saves a screenshot of each step in SHOTS_DIR.

import { check, logIn, start } from "./browser.mjs";

const [base, adminPass, shots] = process.argv.slice(2);
const run = await start(shots);
const shot = (p, name) => run.shot(p, name);

const login = (p, name, pass) => logIn(p, base, name, pass);

const row = (p, user) => p.locator(`#operators tbody tr[data-user="${user}"]`);
const status = (p, text) => p.locator("#operator-status").filter({ hasText: text }).waitFor();
const auditRows = (p) => p.locator("#audit tbody tr");
const column = (p, cell) => p.locator(`#audit tbody tr ${cell}`).allInnerTexts();

try {
  const admin = await run.page();
  await login(admin, "admin", adminPass);

  // The operators page, from the header's link.
  await admin.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Operators" }).click();
  await row(admin, "admin").waitFor();
  check(admin.url().endsWith("#/admin/operators"), `the address names the page: ${admin.url()}`);
  check((await row(admin, "admin").innerText()).includes("(you)"), "the own account is marked");
  await shot(admin, "operators");

  // Creating bob (a user) from the form lists him.
  const form = admin.locator("#new-operator");
  await form.getByLabel("Name").fill("bob");
  await form.getByLabel("Password").fill("bob-first-pass");
  await form.getByLabel("Role").selectOption("user");
  await form.getByLabel("Description").fill("made by the browser test");
  await form.getByRole("button", { name: "Create operator" }).click();
  await status(admin, "Created operator bob (user).");
  await row(admin, "bob").waitFor();
  check((await row(admin, "bob").locator(".role").innerText()) === "user", "bob is a user");
  check((await row(admin, "bob").innerText()).includes("made by the browser test"), "bob's description is listed");
  check((await form.getByLabel("Name").inputValue()) === "", "the form is emptied after creating");
  await shot(admin, "bob-created");

  // Setting bob's password from the page, with the keyboard.
  await row(admin, "bob").getByRole("button", { name: "Set password (bob)" }).click();
  const dialog = admin.locator("#password-dialog");
  await dialog.getByLabel("New password").waitFor();
  check(await dialog.getByLabel("New password").evaluate((e) => e === document.activeElement), "the dialog's field has the focus");
  await dialog.getByLabel("New password").fill("bob-second-pass");
  await shot(admin, "set-password");
  await dialog.getByLabel("New password").press("Enter");
  await status(admin, "Password of bob set.");
  check(!(await dialog.isVisible()), "the dialog is closed");
  await shot(admin, "password-set");

  // The new password works for bob, the old one no longer.
  const bob = await run.page();
  await bob.goto(base + "/");
  await bob.getByLabel("Operator").fill("bob");
  await bob.getByLabel("Password").fill("bob-first-pass");
  await bob.getByRole("button", { name: "Log in" }).click();
  await bob.locator("#error").filter({ hasText: /password|invalid|credentials/i }).waitFor();
  await shot(bob, "bob-old-password");
  await login(bob, "bob", "bob-second-pass");
  check((await bob.locator("#who").innerText()).includes("bob (user)"), "bob is logged in as a user");
  check(!(await bob.getByRole("link", { name: "Audit log" }).isVisible()), "a user sees no admin links");

  // A user going to the admin addresses sees the API's refusal.
  await bob.goto(base + "/#/admin/audit");
  await bob.locator("#load-error").filter({ hasText: /admin role/i }).waitFor();
  check(await bob.getByRole("heading", { name: "Audit log" }).isVisible(), "the page says where it is");
  check((await bob.locator("#audit").count()) === 0, "no audit entries are shown to a user");
  await shot(bob, "bob-audit-forbidden");
  await bob.goto(base + "/#/admin/operators");
  await bob.locator("#load-error").filter({ hasText: /admin role/i }).waitFor();
  await shot(bob, "bob-operators-forbidden");
  await bob.context().close();

  // Changing bob's role.
  await row(admin, "bob").getByRole("button", { name: "Make admin (bob)" }).click();
  await status(admin, "bob is now an admin.");
  check((await row(admin, "bob").locator(".role").innerText()) === "admin", "bob is an admin");
  await shot(admin, "bob-admin");

  // A second "bob" is refused, with the API's reason in the page.
  await form.getByLabel("Name").fill("bob");
  await form.getByLabel("Password").fill("another-pass");
  await form.getByRole("button", { name: "Create operator" }).click();
  await admin.locator("#error").filter({ hasText: "operator 'bob' already exists" }).waitFor();
  check((await row(admin, "bob").count()) === 1, "bob is listed once");
  await shot(admin, "duplicate-refused");

  // Deleting bob, once confirmed.
  let asked = "";
  admin.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await row(admin, "bob").getByRole("button", { name: "Delete (bob)" }).click();
  await status(admin, "Deleted bob.");
  await row(admin, "bob").waitFor({ state: "detached" });
  check(asked.includes("bob"), `the confirmation names bob: ${asked}`);
  check(!(await admin.locator("#error").isVisible()), "the error line is cleared by a success");
  await shot(admin, "bob-deleted");

  // The audit log shows these actions, newest first, failures marked.
  await admin.getByRole("link", { name: "Audit log" }).click();
  await auditRows(admin).first().waitFor();
  const actions = await column(admin, "td.action > div:first-child");
  for (const action of ["POST /api/v0/operators", "PUT /api/v0/operators/{name}/password",
    "PUT /api/v0/operators/{name}", "DELETE /api/v0/operators/{name}"]) {
    check(actions.includes(action), `the log has ${action}: ${actions}`);
  }
  check(actions[0].startsWith("DELETE"), `the newest entry (bob's deletion) is first: ${actions[0]}`);
  const ids = (await column(admin, "td.id")).map(Number);
  check(ids.every((id, i) => i === 0 || id < ids[i - 1]), `newest first: ${ids}`);
  const duplicate = admin.locator('#audit tbody tr[data-outcome="409"]');
  check(await duplicate.count() === 1, "the refused duplicate is listed");
  check((await duplicate.getAttribute("class")) === "failed", "a failure is marked");
  check(await duplicate.locator(".badge", { hasText: "failed" }).isVisible(), "a failure says so");
  const look = (l) => l.evaluate((e) => getComputedStyle(e).backgroundColor);
  const ok = admin.locator('#audit tbody tr[data-outcome="200"]').first();
  check(await look(duplicate) !== await look(ok), "a failure looks different");
  await shot(admin, "audit");

  // More than a page: older and newer entries.
  check(await admin.locator("#newer").isDisabled(), "the newest page has nothing newer");
  await admin.getByRole("button", { name: "Older" }).click();
  await admin.waitForURL(/offset=50/);
  await admin.locator("#summary").filter({ hasText: "Entries 51–" }).waitFor();
  const older = (await column(admin, "td.id")).map(Number);
  check(older[0] < ids[ids.length - 1], `the older page continues the first: ${older[0]} after ${ids.at(-1)}`);
  await shot(admin, "audit-older");
  await admin.getByRole("button", { name: "Newer" }).click();
  await admin.locator("#summary").filter({ hasText: "Entries 1–" }).waitFor();
  check(!admin.url().includes("offset"), `back on the first page: ${admin.url()}`);

  // Filtering by principal: only bob's entries (his failed and his good login).
  await admin.getByLabel("Principal").fill("bob");
  await admin.getByLabel("Principal").press("Enter");
  await admin.waitForURL(/#\/admin\/audit\?principal=bob$/);
  await admin.locator("#summary").filter({ hasText: "Entries 1–2," }).waitFor();
  const principals = await column(admin, "td.principal > a");
  check(principals.length === 2 && principals.every((p) => p.startsWith("bob")), `only bob's entries: ${principals}`);
  check((await column(admin, "td.action > div:first-child")).every((a) => a === "POST /api/v0/operators/{name}/login"), "bob's logins");
  const outcomes = await column(admin, "td.outcome");
  check(outcomes[0] === "200" && /^401\s*failed$/.test(outcomes[1]), `bob's good, then failed login: ${outcomes}`);
  check(await admin.locator('#audit tbody tr[data-outcome="401"].failed').count() === 1, "bob's failed login is marked");
  await shot(admin, "audit-bob");

  // The filtered view survives a reload.
  await admin.reload();
  await admin.locator("#summary").filter({ hasText: "Entries 1–2," }).waitFor();
  check((await admin.getByLabel("Principal").inputValue()) === "bob", "the filter is kept in the form");
  await shot(admin, "audit-bob-reloaded");

  // A time filter goes into the address as RFC 3339.
  const hourAgo = new Date(Date.now() - 3600_000);
  const p = (n) => String(n).padStart(2, "0");
  const local = `${hourAgo.getFullYear()}-${p(hourAgo.getMonth() + 1)}-${p(hourAgo.getDate())}T${p(hourAgo.getHours())}:${p(hourAgo.getMinutes())}`;
  await admin.getByLabel("Since").fill(local);
  await admin.getByRole("button", { name: "Filter" }).click();
  await admin.waitForURL(/since=\d{4}-\d\d-\d\dT\d\d%3A\d\d%3A\d\dZ/);
  await admin.locator("#summary").filter({ hasText: "Entries 1–2," }).waitFor();
  await admin.getByLabel("Until").fill(local);
  await admin.getByRole("button", { name: "Filter" }).click();
  await admin.waitForURL(/until=/);
  await admin.locator("#summary").filter({ hasText: "No entries match" }).waitFor();
  await shot(admin, "audit-nothing");
} catch (err) {
  run.problems.unshift(err.message);
}

// bob's old password (401), bob at the admin addresses (403) and the second
// "bob" (409) make the browser log their failed requests, on purpose;
// nothing else may.
await run.finish("admin pages", /Failed to load resource: the server responded with a status of (401|403|409)/);

// modelyard's web UI end to end, in headless Chromium (Debian's `chromium`, driven by
// playwright-core), with node's own test runner: `node --test` in tests/web.
//
// Starts the already-built binary ($MODELYARD_BIN, default ${CARGO_TARGET_DIR:-target}/debug/modelyard)
// on a free port with a temp data dir, makes users with `modelyard admin user create` and
// `set-password`, models and versions through the HTTP API and `modelyard push` (python3 with
// cog), then does in the browser what a person does. Screenshots go to docs/screenshots/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { promisify } from "node:util";
import { createServer } from "node:net";
import { mkdtempSync, mkdirSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const FIXTURES = path.join(ROOT, "fixtures", "cog");
const SHOTS = path.join(ROOT, "docs", "screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const PASSWORDS = { alice: "correct horse battery", bob: "bob's long password" };

function binary() {
  if (process.env.MODELYARD_BIN) return path.resolve(process.env.MODELYARD_BIN);
  return path.resolve(ROOT, process.env.CARGO_TARGET_DIR || "target", "debug", "modelyard");
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("MODELYARD_")) env[k] = v;
  return { ...env, ...extra };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const srv = { tokens: {}, versions: {}, contexts: [] };

function dbArgs() {
  return ["--data-dir", srv.dataDir];
}

async function cli(args, { token, input } = {}) {
  const env = cleanEnv({ MODELYARD_URL: srv.base });
  if (token) env.MODELYARD_TOKEN = token;
  return new Promise((resolve, reject) => {
    const child = execFile(srv.bin, args, { env, timeout: 180_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`modelyard ${args.join(" ")} failed: ${err.message}\n${stdout}\n${stderr}`));
      const lines = stdout.split("\n").map((l) => l.trim()).filter(Boolean);
      resolve(lines[lines.length - 1]);
    });
    child.stdin.end(input ?? "");
  });
}

async function api(user, method, urlPath, body) {
  const res = await fetch(`${srv.base}${urlPath}`, {
    method,
    headers: { Authorization: `Bearer ${srv.tokens[user]}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function newContext(width = 1100, height = 900) {
  const dir = mkdtempSync(path.join(srv.root, "chromium-"));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width, height },
  });
  srv.contexts.push(ctx);
  return ctx;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(page, user, password = PASSWORDS[user]) {
  await page.goto(`${srv.base}/login`);
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
  return Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Sign in" }).click()]).then((r) => r[0]);
}

before(async () => {
  srv.bin = binary();
  assert.ok(existsSync(srv.bin), `no modelyard binary at ${srv.bin}: run cargo build -p modelyard first`);
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium`);
  mkdirSync(SHOTS, { recursive: true });
  srv.root = mkdtempSync(path.join(tmpdir(), "modelyard-web-"));
  srv.dataDir = path.join(srv.root, "data");
  srv.logPath = path.join(srv.root, "server.log");
  srv.port = await freePort();
  srv.base = `http://127.0.0.1:${srv.port}`;
  for (const user of ["alice", "bob"]) {
    srv.tokens[user] = await cli(["admin", "user", "create", user, ...dbArgs()]);
    await cli(["admin", "user", "set-password", user, ...dbArgs()], { input: `${PASSWORDS[user]}\n` });
  }
  const log = openSync(srv.logPath, "a");
  srv.child = spawn(
    srv.bin,
    ["serve", "--addr", `127.0.0.1:${srv.port}`, ...dbArgs(), "--deployment-idle-secs", "0"],
    { env: cleanEnv({ RUST_LOG: "info" }), stdio: ["ignore", log, log] },
  );
  const deadline = Date.now() + 60_000;
  for (;;) {
    assert.ok(srv.child.exitCode === null, `the server exited:\n${readFileSync(srv.logPath, "utf8")}`);
    try {
      await fetch(`${srv.base}/v1/hardware`);
      break;
    } catch {
      assert.ok(Date.now() < deadline, "the server did not start in 60 s");
      await sleep(100);
    }
  }
  // alice/hello: private for now, with one version; alice/scratch: private, one version, to delete.
  for (const name of ["hello", "scratch"]) {
    const r = await api("alice", "POST", "/v1/models", {
      owner: "alice", name, visibility: "private", hardware: "cpu",
      description: name === "hello" ? "Greets whoever you name" : "A model to throw away",
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    srv.versions[name] = await cli(["push", `alice/${name}`, path.join(FIXTURES, "echo")], { token: srv.tokens.alice });
    assert.match(srv.versions[name], /^[0-9a-f]{64}$/);
  }
  srv.alice = await newContext();
  srv.page = await srv.alice.newPage();
});

after(async () => {
  for (const c of srv.contexts) await c.close().catch(() => {});
  if (srv.child && srv.child.exitCode === null) {
    srv.child.kill("SIGTERM");
    await new Promise((r) => srv.child.once("exit", r));
  }
  if (srv.root) rmSync(srv.root, { recursive: true, force: true });
});

test("a wrong password is refused, the right one signs in", async () => {
  const page = srv.page;
  const refused = await signIn(page, "alice", "not the password");
  assert.equal(refused.status(), 401);
  await page.getByText("do not match").waitFor();
  await shot(page, "login-refused");
  const ok = await signIn(page, "alice");
  assert.equal(ok.status(), 200);
  await page.getByText("Signed in as alice.").waitFor();
  await page.getByRole("link", { name: "alice/hello" }).waitFor();
  await shot(page, "dashboard");
  const cookies = await srv.alice.cookies(srv.base);
  const session = cookies.find((c) => c.name === "modelyard_session");
  assert.ok(session && session.httpOnly && session.sameSite === "Lax", JSON.stringify(cookies));
});

test("an outsider gets 404 for a private model's pages", async () => {
  const bob = await (await newContext()).newPage();
  await signIn(bob, "bob");
  for (const p of ["/alice/scratch", "/alice/scratch/versions", `/alice/scratch/versions/${srv.versions.scratch}`, "/alice/scratch/settings"]) {
    const r = await bob.goto(`${srv.base}${p}`);
    assert.equal(r.status(), 404, p);
  }
  await bob.getByRole("heading", { name: "404 · Not Found" }).waitFor();
  await shot(bob, "outsider-404");
  const anon = await fetch(`${srv.base}/alice/scratch`);
  assert.equal(anon.status, 404);
  // The API's own space keeps problem+json.
  const apiMiss = await fetch(`${srv.base}/v1/nothing/here`);
  assert.equal(apiMiss.status, 404);
  assert.match(apiMiss.headers.get("content-type"), /problem\+json/);
});

test("a forged form without its CSRF token is refused with 403", async () => {
  const page = srv.page;
  await page.goto(`${srv.base}/alice/hello/settings`);
  await page.getByLabel("Description").fill("forged description");
  await page.evaluate(() => document.querySelectorAll('input[name="csrf"]').forEach((e) => e.remove()));
  const [resp] = await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Save" }).click()]);
  assert.equal(resp.status(), 403);
  await page.getByText("security token").waitFor();
  // And a wrong token, posted from the page's own origin, fares no better.
  const status = await page.evaluate(async () => {
    const r = await fetch("/alice/hello/settings", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: "csrf=0000&visibility=public&description=forged",
    });
    return r.status;
  });
  assert.equal(status, 403);
  const m = await api("alice", "GET", "/v1/models/alice/hello");
  assert.equal(m.body.description, "Greets whoever you name");
  assert.equal(m.body.visibility, "private");
});

test("visibility changes from the Settings tab", async () => {
  const page = srv.page;
  await page.goto(`${srv.base}/alice/hello/settings`);
  await page.getByLabel(/Public: anyone/).check();
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Save" }).click()]);
  await page.getByText("alice/hello is now public.").waitFor();
  const m = await api("alice", "GET", "/v1/models/alice/hello");
  assert.equal(m.body.visibility, "public");
  // Now anyone can see it.
  assert.equal((await fetch(`${srv.base}/alice/hello`)).status, 200);
});

test("the playground runs a prediction and shows its page", async () => {
  const page = srv.page;
  await page.goto(`${srv.base}/alice/hello/playground`);
  await shot(page, "playground");
  await page.getByLabel(/Prompt/).fill("world");
  await page.getByLabel(/Repeat/).fill("2");
  await Promise.all([page.waitForURL(/\/p\/[a-z2-7]{26}$/), page.getByRole("button", { name: "Run" }).click()]);
  const id = page.url().split("/").pop();
  const r = await api("alice", "GET", `/v1/predictions/${id}`);
  assert.equal(r.status, 200);
  assert.equal(r.body.source, "web");
  assert.deepEqual(r.body.input, { prompt: "world", repeat: 2 });
  assert.equal(r.body.urls.web, `${srv.base}/p/${id}`);
  // The page follows the prediction live (the runner runs it on a Cog server).
  await page.locator('[data-field="status"]').filter({ hasText: /succeeded|failed|canceled/ }).waitFor({ timeout: 120_000 });
  const status = await page.locator('[data-field="status"]').textContent();
  assert.equal(status, "succeeded", await page.locator('[data-field="logs"]').textContent());
  await page.getByText("hello world hello world").waitFor();
  await shot(page, "prediction");
  // Invalid input comes back to the form with the version's own words.
  await page.goto(`${srv.base}/alice/hello/playground`);
  await page.getByLabel(/Prompt/).fill("x");
  await page.getByLabel(/Repeat/).evaluate((e) => { e.removeAttribute("max"); e.value = "9"; });
  const [bad] = await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Run" }).click()]);
  assert.equal(bad.status(), 422);
  await page.locator(".field-error").first().waitFor();
});

test("a version in use cannot be deleted, and the page says exactly why", async () => {
  const page = srv.page;
  const v = srv.versions.hello;
  // bob runs it through the API, and alice deploys it from the web.
  const p = await api("bob", "POST", "/v1/predictions", { version: `alice/hello:${v}`, input: { prompt: "bob" } });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  await page.goto(`${srv.base}/deployments`);
  await page.getByLabel("Name", { exact: true }).fill("prod");
  await page.getByLabel(/^Model/).fill("alice/hello");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Create deployment" }).click()]);
  await page.getByText("Created the deployment alice/prod.").waitFor();

  await page.goto(`${srv.base}/alice/hello/versions`);
  await shot(page, "versions");
  await Promise.all([page.waitForNavigation(), page.getByRole("link", { name: v.slice(0, 12) }).first().click()]);
  const use = page.locator("section.danger");
  await use.getByText("3 things block it").waitFor();
  await use.getByText("alice/hello is public").waitFor();
  await use.getByText("bob has run 1 prediction").waitFor();
  await use.getByText("The deployment alice/prod runs version").waitFor();
  assert.equal(await page.getByRole("button", { name: /Delete version/ }).count(), 0);
  assert.equal(await page.getByTestId("prediction-count").textContent(), "2 predictions, by everyone");
  await shot(page, "version-blocked");

  // The model cannot go either: public, with versions (each linked).
  await page.goto(`${srv.base}/alice/hello/settings`);
  const del = page.locator("section.danger");
  await del.getByText("2 things block it").waitFor();
  await del.getByText("still has 1 version").waitFor();
  await del.getByRole("link", { name: v.slice(0, 12) }).waitFor();
  assert.equal(await page.getByRole("button", { name: /^Delete / }).count(), 0);
  await shot(page, "settings-blocked");

  // A refused DELETE through the API agrees with the page.
  const r = await api("alice", "DELETE", `/v1/models/alice/hello/versions/${v}`);
  assert.equal(r.status, 409);
  assert.deepEqual(r.body.blockers.map((b) => b.kind), ["public", "predictions_by_others", "deployment"]);
});

test("a deployment is disabled and deleted from its page", async () => {
  const page = srv.page;
  await page.goto(`${srv.base}/alice/hello/versions/${srv.versions.hello}`);
  await Promise.all([page.waitForNavigation(), page.getByRole("link", { name: "Open the deployment alice/prod" }).click()]);
  assert.match(page.url(), /\/deployments\/alice\/prod$/);
  await page.locator("section.danger").getByText("is enabled").waitFor();
  await shot(page, "deployment");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: /Disable/ }).click()]);
  await page.getByText("Release 2 of alice/prod is live.").waitFor();
  await page.getByLabel(/Type .* to confirm/).fill("alice/prod");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Delete alice/prod" }).click()]);
  await page.getByText("Deleted the deployment alice/prod.").waitFor();
  assert.equal((await api("alice", "GET", "/v1/deployments/alice/prod")).status, 404);
});

test("a version and then its model are deleted, confirmed by typing", async () => {
  const page = srv.page;
  const v = srv.versions.scratch;
  // First something blocks it: a (disabled) deployment. The page says so and offers no button.
  const d = await api("alice", "POST", "/v1/deployments", {
    name: "temp", model: "alice/scratch", version: v, hardware: "cpu", min_instances: 0, max_instances: 0,
  });
  assert.equal(d.status, 200, JSON.stringify(d.body));
  await page.goto(`${srv.base}/alice/scratch/versions/${v}`);
  await page.locator("section.danger").getByText("The deployment alice/temp runs version").waitFor();
  assert.equal(await page.getByRole("button", { name: /Delete version/ }).count(), 0);
  // Clearing it (from the deployment's page) makes the version deletable.
  await Promise.all([page.waitForNavigation(), page.getByRole("link", { name: "Open the deployment alice/temp" }).click()]);
  await page.getByLabel(/Type .* to confirm/).fill("alice/temp");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Delete alice/temp" }).click()]);
  await page.getByText("Deleted the deployment alice/temp.").waitFor();
  await page.goto(`${srv.base}/alice/scratch/versions/${v}`);
  await page.getByText("Nothing uses this version").waitFor();
  // A wrong confirmation deletes nothing.
  const confirm = page.getByLabel(/Type .* to confirm/);
  await confirm.fill("nope");
  assert.ok(await page.getByRole("button", { name: /Delete version/ }).isDisabled());
  await confirm.evaluate((e) => e.form.querySelector("button").removeAttribute("disabled"));
  const [wrong] = await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: /Delete version/ }).click()]);
  assert.equal(wrong.status(), 422);
  assert.equal((await api("alice", "GET", `/v1/models/alice/scratch/versions/${v}`)).status, 200);
  await page.getByLabel(/Type .* to confirm/).fill(v.slice(0, 12));
  await shot(page, "version-delete-confirm");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: /Delete version/ }).click()]);
  assert.match(page.url(), /\/alice\/scratch\/versions$/);
  await page.getByText(`Deleted the version ${v.slice(0, 12)} of alice/scratch.`).waitFor();
  assert.equal((await api("alice", "GET", `/v1/models/alice/scratch/versions/${v}`)).status, 404);

  await page.goto(`${srv.base}/alice/scratch/settings`);
  await page.getByText("Nothing blocks deleting alice/scratch").waitFor();
  await page.getByLabel(/Type .* to confirm/).fill("alice/scratch");
  await shot(page, "model-delete-confirm");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Delete alice/scratch" }).click()]);
  assert.equal(new URL(page.url()).pathname, "/");
  await page.getByText("Deleted the model alice/scratch.").waitFor();
  assert.equal((await api("alice", "GET", "/v1/models/alice/scratch")).status, 404);
  const gone = await page.goto(`${srv.base}/alice/scratch`);
  assert.equal(gone.status(), 404);
});

test("the account page makes and revokes API tokens", async () => {
  const page = srv.page;
  await page.goto(`${srv.base}/account`);
  await page.getByLabel("Name of a new token").fill("laptop");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Create token" }).click()]);
  const token = (await page.getByTestId("new-token").textContent()).trim();
  assert.match(token, /^r8_[0-9a-f]{40}$/);
  const res = await fetch(`${srv.base}/v1/account`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  await shot(page, "account");
  await page.goto(`${srv.base}/account`);
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Revoke the token laptop" }).click()]);
  await page.getByText("Revoked the token").waitFor();
  const after = await fetch(`${srv.base}/v1/account`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(after.status, 401);
});

test("a prune is previewed, then done, and the Trash page restores and purges", async () => {
  const page = srv.page;
  const r = await api("alice", "POST", "/v1/models", { owner: "alice", name: "old", visibility: "private", hardware: "cpu" });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const ids = [];
  for (const f of ["echo", "echo2", "iterator"]) {
    ids.push(await cli(["push", "alice/old", path.join(FIXTURES, f)], { token: srv.tokens.alice }));
  }
  const [oldest, middle, newest] = ids;
  // The preview decides per version and changes nothing.
  await page.goto(`${srv.base}/alice/old/versions`);
  await page.getByLabel("Versions to keep").fill("1");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Preview" }).click()]);
  const preview = page.getByTestId("prune-preview");
  await preview.waitFor();
  assert.equal(await preview.locator(`tr[data-version="${newest}"]`).getAttribute("data-decision"), "kept");
  for (const v of [oldest, middle]) {
    assert.equal(await preview.locator(`tr[data-version="${v}"]`).getAttribute("data-decision"), "deleted");
  }
  const frees = await page.getByTestId("prune-frees").textContent();
  assert.match(frees, /deletes 2 versions and frees [0-9.]+ (B|KB|MB)/);
  assert.doesNotMatch(frees, /frees 0 B/);
  assert.equal((await api("alice", "GET", "/v1/models/alice/old/versions")).body.results.length, 3);
  await shot(page, "versions-prune");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: /^Prune 2 versions/ }).click()]);
  await page.getByText("Deleted 2 versions (to the trash), kept 1").waitFor();
  const left = (await api("alice", "GET", "/v1/models/alice/old/versions")).body.results.map((v) => v.id);
  assert.deepEqual(left, [newest]);

  // Both are in the trash, each with its time left and what it frees.
  await page.goto(`${srv.base}/account/trash`);
  const row = (v) => page.locator(`tr[data-target="alice/old:${v}"]`);
  for (const v of [oldest, middle]) {
    await row(v).waitFor();
    assert.match(await row(v).textContent(), /(7 days|6 days 23 hours) left/);
  }
  await shot(page, "trash");
  // Restore brings one back under the same id, and it runs again.
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: `Restore alice/old:${middle}` }).click()]);
  assert.match(page.url(), new RegExp(`/alice/old/versions/${middle}$`));
  await page.getByText(`Restored the version ${middle.slice(0, 12)} of alice/old.`).waitFor();
  assert.equal((await api("alice", "GET", `/v1/models/alice/old/versions/${middle}`)).status, 200);
  // Purge removes the other for good.
  await page.goto(`${srv.base}/account/trash`);
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: `Purge alice/old:${oldest}` }).click()]);
  await page.getByText(`Purged alice/old:${oldest.slice(0, 12)}: it is gone for good.`).waitFor();
  assert.equal(await row(oldest).count(), 0);
  const gone = await api("alice", "POST", `/v1/models/alice/old/versions/${oldest}/restore`);
  assert.equal(gone.status, 404, JSON.stringify(gone.body));
  // The account page adds it up.
  await page.goto(`${srv.base}/account`);
  assert.match(await page.getByTestId("storage").textContent(), /Your models store [0-9.]+ (B|KB|MB)/);
});

test("pages fit a phone-width screen and sign-out ends the session", async () => {
  const phone = await (await newContext(390, 844)).newPage();
  await signIn(phone, "alice");
  await phone.goto(`${srv.base}/alice/hello`);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than the screen`);
  await shot(phone, "model-phone");
  await phone.goto(`${srv.base}/alice/hello/versions/${srv.versions.hello}`);
  await shot(phone, "version-phone");
  await Promise.all([phone.waitForNavigation(), phone.getByRole("button", { name: /Sign out/ }).click()]);
  await phone.getByText("Signed out.").waitFor();
  const r = await phone.goto(`${srv.base}/account`);
  assert.match(phone.url(), /\/login\?next=%2Faccount$/);
  assert.equal(r.status(), 200);
});

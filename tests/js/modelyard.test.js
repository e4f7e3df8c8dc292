// modelyard against the official JavaScript client (`replicate` on npm), with node's own test
// runner: `node --test` in tests/js. Like the Python suite it starts the already-built binary
// ($MODELYARD_BIN, default ${CARGO_TARGET_DIR:-target}/debug/modelyard) on a free port with a
// temp data dir (or $MODELYARD_TEST_DATABASE_URL, which must be a fresh database), makes users
// with `modelyard admin`, pushes a fixture with `modelyard push` and stops the server at the end.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { promisify } from "node:util";
import { mkdtempSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Replicate from "replicate";
import { FIXTURES, binary, cleanEnv, freePort, sleep } from "./support.js";

const run = promisify(execFile);

const srv = { tokens: {}, versions: {} };

function dbArgs() {
  const args = ["--data-dir", srv.dataDir];
  if (process.env.MODELYARD_TEST_DATABASE_URL) {
    args.push("--database-url", process.env.MODELYARD_TEST_DATABASE_URL);
  }
  return args;
}

function logTail() {
  return existsSync(srv.logPath)
    ? readFileSync(srv.logPath, "utf8").split("\n").slice(-40).join("\n")
    : "(no server log)";
}

async function cli(args, token) {
  const env = cleanEnv({ MODELYARD_URL: srv.base });
  if (token) env.MODELYARD_TOKEN = token;
  try {
    const { stdout } = await run(srv.bin, args, { env, timeout: 180_000 });
    const lines = stdout.split("\n").map((l) => l.trim()).filter(Boolean);
    assert.ok(lines.length > 0, `modelyard ${args.join(" ")} printed nothing`);
    return lines[lines.length - 1];
  } catch (e) {
    throw new Error(
      `modelyard ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`,
    );
  }
}

async function waitReady(child) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return false;
    try {
      await fetch(`${srv.base}/v1/hardware`);
      return true; // any HTTP answer means it is serving
    } catch {
      await sleep(100);
    }
  }
  return false;
}

async function api(user, method, urlPath, body) {
  const res = await fetch(`${srv.base}${urlPath}`, {
    method,
    headers: {
      Authorization: `Bearer ${srv.tokens[user]}`,
      "Content-Type": "application/json",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

function client(user) {
  return new Replicate({ auth: srv.tokens[user], baseUrl: `${srv.base}/v1` });
}

before(async () => {
  srv.bin = binary();
  assert.ok(existsSync(srv.bin), `no modelyard binary at ${srv.bin}: run cargo build -p modelyard first`);
  srv.root = mkdtempSync(path.join(tmpdir(), "modelyard-js-"));
  srv.dataDir = path.join(srv.root, "data");
  srv.logPath = path.join(srv.root, "server.log");
  srv.port = await freePort();
  srv.base = `http://127.0.0.1:${srv.port}`;
  const log = openSync(srv.logPath, "w");
  srv.child = spawn(srv.bin, ["serve", "--addr", `127.0.0.1:${srv.port}`, ...dbArgs()], {
    stdio: ["ignore", log, log],
    env: cleanEnv({ RUST_LOG: process.env.RUST_LOG || "info" }),
  });
  srv.exited = new Promise((resolve) => srv.child.on("exit", (code, signal) => resolve({ code, signal })));
  assert.ok(await waitReady(srv.child), `modelyard serve did not become ready:\n${logTail()}`);

  for (const user of ["alice", "bob"]) {
    srv.tokens[user] = await cli(["admin", "user", "create", user, ...dbArgs()]);
  }
  await cli(["admin", "org", "create", "acme", "--member", "alice", ...dbArgs()]);
  for (const [owner, name, visibility] of [
    ["alice", "echo", "public"],
    ["alice", "secret", "private"],
    ["acme", "shared", "public"],
  ]) {
    const r = await api("alice", "POST", "/v1/models", { owner, name, visibility, hardware: "cpu" });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  srv.versions["alice/echo"] = [
    await cli(["push", "alice/echo", path.join(FIXTURES, "echo")], srv.tokens.alice),
    await cli(["push", "alice/echo", path.join(FIXTURES, "echo2")], srv.tokens.alice),
  ];
  srv.versions["alice/secret"] = [
    await cli(["push", "alice/secret", path.join(FIXTURES, "echo")], srv.tokens.alice),
  ];
});

after(async () => {
  if (!srv.child) return;
  if (srv.child.exitCode === null && srv.child.signalCode === null) {
    srv.child.kill("SIGTERM");
  }
  const timer = setTimeout(() => srv.child.kill("SIGKILL"), 20_000);
  const exit = await srv.exited;
  clearTimeout(timer);
  const log = existsSync(srv.logPath) ? readFileSync(srv.logPath, "utf8") : "";
  rmSync(srv.root, { recursive: true, force: true });
  assert.ok(!log.includes("panicked"), `the server panicked:\n${log}`);
  assert.deepEqual(exit, { code: 0, signal: null }, `modelyard serve did not shut down cleanly:\n${log}`);
});

async function allModels(replicate) {
  const out = [];
  for await (const page of replicate.paginate(replicate.models.list)) out.push(...page);
  return out;
}

test("models.get returns the fields the client needs", async () => {
  const m = await client("alice").models.get("alice", "echo");
  assert.equal(m.url, `${srv.base}/alice/echo`);
  assert.equal(m.owner, "alice");
  assert.equal(m.name, "echo");
  assert.equal(m.visibility, "public");
  assert.equal(typeof m.run_count, "number");
  assert.equal(m.latest_version.id, srv.versions["alice/echo"][1]);
  assert.match(m.latest_version.id, /^[0-9a-f]{64}$/);
  assert.equal(typeof m.latest_version.cog_version, "string");
  const input = m.latest_version.openapi_schema.components.schemas.Input;
  assert.equal(input.properties.prompt.type, "string");
  assert.equal(input.properties.repeat.type, "integer");
});

test("a public model is visible to others, a private one is a 404", async () => {
  const bob = client("bob");
  assert.equal((await bob.models.get("alice", "echo")).owner, "alice");
  await assert.rejects(bob.models.get("alice", "secret"), (e) => {
    assert.equal(e.name, "ApiError");
    assert.equal(e.response.status, 404);
    assert.match(e.message, /404/);
    return true;
  });
  assert.equal((await client("alice").models.get("alice", "secret")).visibility, "private");
});

test("models.list shows each caller what it may see", async () => {
  const page = await client("alice").models.list();
  assert.ok(Array.isArray(page.results));
  assert.ok("next" in page);
  const names = (models) => new Set(models.map((m) => `${m.owner}/${m.name}`));
  const alice = names(await allModels(client("alice")));
  for (const n of ["alice/echo", "alice/secret", "acme/shared"]) assert.ok(alice.has(n), n);
  const bob = names(await allModels(client("bob")));
  assert.ok(bob.has("alice/echo"));
  assert.ok(bob.has("acme/shared"));
  assert.ok(!bob.has("alice/secret"), "bob must not see alice's private model");
});

test("models.list pages through absolute next links", async () => {
  const created = new Set();
  for (let i = 0; i < 101; i++) {
    const name = `js-page-${String(i).padStart(3, "0")}`;
    const r = await api("alice", "POST", "/v1/models", {
      owner: "alice", name, visibility: "private", hardware: "cpu",
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    created.add(`alice/${name}`);
  }
  const replicate = client("alice");
  const first = await replicate.models.list();
  assert.equal(first.results.length, 100);
  assert.ok(first.next.startsWith(`${srv.base}/v1/models`), first.next);
  const listed = (await allModels(replicate)).map((m) => `${m.owner}/${m.name}`);
  assert.equal(listed.length, new Set(listed).size, "a model was listed twice");
  for (const n of created) assert.ok(listed.includes(n), n);
  const bob = (await allModels(client("bob"))).map((m) => `${m.owner}/${m.name}`);
  assert.ok(!bob.some((n) => created.has(n)));
});

test("models.versions.list and get", async () => {
  const replicate = client("bob");
  const page = await replicate.models.versions.list("alice", "echo");
  assert.deepEqual(
    page.results.map((v) => v.id).sort(),
    [...srv.versions["alice/echo"]].sort(),
  );
  const v = await replicate.models.versions.get("alice", "echo", srv.versions["alice/echo"][0]);
  assert.equal(v.id, srv.versions["alice/echo"][0]);
  assert.ok(v.openapi_schema.components.schemas.Input);
});

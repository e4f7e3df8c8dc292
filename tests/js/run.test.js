// Running models through the official JavaScript client (`replicate` 1.4.0) on real Cog servers:
// `replicate.run` with a version, a Buffer input uploaded through the Files API, and webhooks
// checked with the client's own `validateWebhook`. The server runs with
// --allow-private-webhooks so it may call the receiver this test starts on 127.0.0.1.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { createServer as createHttpServer } from "node:http";
import { promisify } from "node:util";
import { mkdtempSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Replicate, { validateWebhook } from "replicate";
import { FIXTURES, binary, cleanEnv, freePort, sleep } from "./support.js";

const run = promisify(execFile);

const srv = { versions: {} };

async function cli(args, token) {
  const env = cleanEnv({ MODELYARD_URL: srv.base });
  if (token) env.MODELYARD_TOKEN = token;
  const { stdout } = await run(srv.bin, args, { env, timeout: 180_000 });
  const lines = stdout.split("\n").map((l) => l.trim()).filter(Boolean);
  return lines[lines.length - 1];
}

function logTail() {
  return existsSync(srv.logPath) ? readFileSync(srv.logPath, "utf8").split("\n").slice(-40).join("\n") : "";
}

async function pushModel(name, fixture) {
  const res = await fetch(`${srv.base}/v1/models`, {
    method: "POST",
    headers: { Authorization: `Bearer ${srv.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ owner: "alice", name, visibility: "private", hardware: "cpu" }),
  });
  assert.equal(res.status, 201, await res.text());
  const vid = await cli(["push", `alice/${name}`, path.join(FIXTURES, fixture)], srv.token);
  return `alice/${name}:${vid}`;
}

before(async () => {
  srv.bin = binary();
  assert.ok(existsSync(srv.bin), `no modelyard binary at ${srv.bin}: run cargo build -p modelyard first`);
  srv.root = mkdtempSync(path.join(tmpdir(), "modelyard-js-run-"));
  srv.dataDir = path.join(srv.root, "data");
  srv.logPath = path.join(srv.root, "server.log");
  srv.port = await freePort();
  srv.base = `http://127.0.0.1:${srv.port}`;
  const log = openSync(srv.logPath, "w");
  srv.child = spawn(
    srv.bin,
    ["serve", "--addr", `127.0.0.1:${srv.port}`, "--data-dir", srv.dataDir, "--allow-private-webhooks"],
    { stdio: ["ignore", log, log], env: cleanEnv({ RUST_LOG: process.env.RUST_LOG || "info" }) },
  );
  srv.exited = new Promise((resolve) => srv.child.on("exit", (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 60_000;
  let ready = false;
  while (!ready && Date.now() < deadline && srv.child.exitCode === null) {
    try {
      await fetch(`${srv.base}/v1/hardware`);
      ready = true;
    } catch {
      await sleep(100);
    }
  }
  assert.ok(ready, `modelyard serve did not become ready:\n${logTail()}`);
  srv.token = await cli(["admin", "user", "create", "alice", "--data-dir", srv.dataDir]);
  srv.replicate = new Replicate({ auth: srv.token, baseUrl: `${srv.base}/v1` });
  srv.versions.echo = await pushModel("echo", "echo");
  srv.versions.fileinput = await pushModel("reader", "fileinput");
});

after(async () => {
  if (!srv.child) return;
  if (srv.child.exitCode === null) srv.child.kill("SIGTERM");
  const timer = setTimeout(() => srv.child.kill("SIGKILL"), 20_000);
  const exit = await srv.exited;
  clearTimeout(timer);
  const log = existsSync(srv.logPath) ? readFileSync(srv.logPath, "utf8") : "";
  rmSync(srv.root, { recursive: true, force: true });
  assert.ok(!log.includes("panicked"), `the server panicked:\n${log}`);
  assert.deepEqual(exit, { code: 0, signal: null }, `modelyard serve did not shut down cleanly:\n${log}`);
});

test("replicate.run with a version returns the model's output", async () => {
  const out = await srv.replicate.run(srv.versions.echo, { input: { prompt: "js", repeat: 2 } });
  assert.equal(out, "hello js hello js");
});

test("a Buffer input is uploaded through the Files API and read by the model", async () => {
  const out = await srv.replicate.run(srv.versions.fileinput, {
    input: { document: Buffer.from("from javascript") },
  });
  assert.equal(out, "from javascript");
  const files = await srv.replicate.files.list();
  assert.ok(files.results.length >= 1, JSON.stringify(files));
});

test("webhooks verify with validateWebhook and the account's secret", async () => {
  const received = [];
  const hook = createHttpServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ headers: req.headers, body });
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => hook.listen(0, "127.0.0.1", r));
  try {
    const { key: secret } = await srv.replicate.webhooks.default.secret.get();
    assert.match(secret, /^whsec_/);
    const prediction = await srv.replicate.predictions.create({
      version: srv.versions.echo.split(":")[1],
      input: { prompt: "hooked" },
      webhook: `http://127.0.0.1:${hook.address().port}/hook`,
      webhook_events_filter: ["start", "completed"],
    });
    const deadline = Date.now() + 60_000;
    while (!received.some((r) => JSON.parse(r.body).status === "succeeded")) {
      assert.ok(Date.now() < deadline, `no completed webhook: ${JSON.stringify(received)}`);
      await sleep(100);
    }
    assert.equal(received.length, 2, JSON.stringify(received.map((r) => JSON.parse(r.body).status)));
    for (const r of received) {
      const body = JSON.parse(r.body);
      assert.equal(body.id, prediction.id);
      assert.equal(
        await validateWebhook(
          {
            id: r.headers["webhook-id"],
            timestamp: r.headers["webhook-timestamp"],
            signature: r.headers["webhook-signature"],
            body: r.body,
            secret,
          },
        ),
        true,
      );
    }
    const last = received[received.length - 1];
    assert.equal(JSON.parse(last.body).output, "hello hooked");
    // The headers-object form of the validator, and a tampered body.
    assert.equal(await validateWebhook({ headers: last.headers, body: last.body }, secret), true);
    assert.equal(
      await validateWebhook({ headers: last.headers, body: last.body.replace("hooked", "forged") }, secret),
      false,
    );
  } finally {
    hook.close();
  }
});

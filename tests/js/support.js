// What both client suites need to start the real binary: where things are, a free port, and an
// environment without the caller's MODELYARD_* settings, so the server and the CLI use exactly
// the data dir, database and server a test gives them.
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const FIXTURES = path.join(ROOT, "fixtures", "cog");
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function binary() {
  if (process.env.MODELYARD_BIN) return path.resolve(process.env.MODELYARD_BIN);
  return path.resolve(ROOT, process.env.CARGO_TARGET_DIR || "target", "debug", "modelyard");
}

export function freePort() {
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

export function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("MODELYARD_")) env[k] = v;
  }
  return { ...env, ...extra };
}

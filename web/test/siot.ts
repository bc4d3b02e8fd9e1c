// Runs a real `siot serve` for the tests that need one (link, ui): built
// from this repository with the Go toolchain ($GO or go) into a temporary
// directory, started on loopback ports, killed by the test's after().
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// The bundle runs from web/.build/test/.
export const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export interface Serving {
  proc: ChildProcess;
  nats: string; // nats://127.0.0.1:PORT
  http: string; // 127.0.0.1:PORT
  id: string; // the root
  exited: Promise<void>;
}

export const procs = new Set<ChildProcess>();

/** Runs `siot serve` (with extra flags) and resolves when it logs "siot serving". */
export function serve(bin: string, data: string, listen: string, http: string, extra: string[] = []): Promise<Serving> {
  const proc = spawn(bin, ["serve", "--data", data, "--listen", listen, "--http", http, "--log-format", "json", ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SIOT_"))),
  });
  procs.add(proc);
  const exited = new Promise<void>((res) => proc.on("exit", () => res()));
  exited.then(() => procs.delete(proc));
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`siot serve: not serving after 30 s:\n${log}`)), 30_000);
    const onData = (b: Buffer) => {
      log += b.toString();
      for (const line of log.split("\n")) {
        if (!line.includes('"siot serving"')) continue;
        const rec = JSON.parse(line) as { nats: string; http: string; id: string };
        clearTimeout(timer);
        proc.stdout!.off("data", onData);
        proc.stderr!.off("data", onData);
        proc.stdout!.resume();
        proc.stderr!.resume();
        resolve({ proc, nats: rec.nats, http: rec.http, id: rec.id, exited });
        return;
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    exited.then(() => reject(new Error(`siot serve exited before serving:\n${log}`)));
  });
}

export function run(bin: string, args: string[], env: Record<string, string>, stdin = ""): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = execFile(bin, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`siot ${args.join(" ")}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
    // A command that exits without reading its input makes the write fail
    // (EPIPE): its exit status says what happened, not the pipe.
    c.stdin!.on("error", () => {});
    c.stdin!.end(stdin);
  });
}

export async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Builds cmd/siot into bin; resolves when done. */
export function buildSiot(bin: string): Promise<void> {
  const t0 = Date.now();
  return new Promise<void>((res, rej) =>
    execFile(process.env.GO || "go", ["build", "-o", bin, "./cmd/siot"], { cwd: repo, timeout: 300_000 }, (err, _o, stderr) =>
      err ? rej(new Error(`go build: ${err.message}\n${stderr}`)) : res(),
    ),
  ).then(() => console.log(`# go build ./cmd/siot: ${Date.now() - t0} ms`));
}

/** Kills every siot this process started and waits for them to exit. */
export async function killAll(): Promise<void> {
  for (const p of procs) p.kill("SIGKILL");
  await Promise.all([...procs].map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.on("exit", r)))));
}

// The README's five-minute tour, run as written (bash -e, free ports, the
// binary built from this tree), up to its last line; then the page it
// tells the reader to open, in Chromium, signed in as the user it adds:
// the tree shows the tour's device and sensor, and the sensor's page its
// two points.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Browser } from "playwright-core";
import { launch, screenshot } from "./browser.ts";
import { buildSiot, repo } from "./siot.ts";

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** The first sh block under heading in README.md. */
function readmeBlock(heading: string): string {
  const md = readFileSync(join(repo, "README.md"), "utf8");
  const at = md.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README.md has no ${heading}`);
  const m = /```sh\n([\s\S]*?)```/.exec(md.slice(at));
  assert.ok(m, `no sh block under ${heading}`);
  return m[1];
}

describe("the README tour opens the web UI", { timeout: 240_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), "siot-tour-"));
  const bin = join(tmp, "siot");
  let tour: ReturnType<typeof spawn> | undefined;
  let browser: Browser | undefined;
  let out = "";
  let url = "";
  let email = "";
  let password = "";

  before(async () => {
    await buildSiot(bin);
    let script = readmeBlock("## A five-minute tour");
    assert.ok(script.startsWith("make build\n"), "the tour starts with make build");
    script = script.slice("make build\n".length).replaceAll("bin/siot ", `${bin} `);
    for (const port of ["4222", "4223", "8118", "8119"]) script = script.replaceAll(`127.0.0.1:${port}`, `127.0.0.1:${await freePort()}`);
    const open = /# Open (http:\/\/127\.0\.0\.1:\d+\/) and sign in as (\S+):/.exec(script);
    assert.ok(open, "the tour says which page to open and as whom");
    [, url, email] = open;
    const pw = /echo '([^']+)' \| \S+ user add --email (\S+)/.exec(script);
    assert.ok(pw && pw[2] === email, "the tour adds the user it signs in as");
    password = pw[1];
    const last = "kill %1 %2 %3; wait";
    assert.ok(script.trimEnd().endsWith(last), `the tour ends with ${last}`);
    // Stop before the last line: the servers stay up for the page.
    script = script.trimEnd().slice(0, -last.length) + "echo TOUR-READY\nwait\n";
    tour = spawn("bash", ["-e", "-c", script], { cwd: tmp, detached: true, env: { PATH: process.env.PATH ?? "", HOME: tmp, TMPDIR: tmp }, stdio: ["ignore", "pipe", "pipe"] });
    tour.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    tour.stderr!.on("data", (b: Buffer) => (out += b.toString()));
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`the tour did not finish in 120 s:\n${out}`)), 120_000);
      const poll = setInterval(() => {
        if (out.includes("TOUR-READY")) {
          clearTimeout(timer);
          clearInterval(poll);
          res();
        }
      }, 50);
      tour!.on("exit", (code) => {
        clearTimeout(timer);
        clearInterval(poll);
        rej(new Error(`the tour exited (${code}) before its last line:\n${out}`));
      });
    });
    tour.removeAllListeners("exit");
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    if (tour?.pid) {
      try {
        process.kill(-tour.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  test("signed in as the tour's user, the page shows the tour's tree and points", async () => {
    const page = await browser!.newPage();
    await page.goto(url);
    await page.getByTestId("email").fill(email);
    await page.getByTestId("password").fill(password);
    await page.getByTestId("signin").click();
    await page.getByTestId("tree").waitFor({ timeout: 20_000 });
    const row = (text: string) => page.locator("a.label", { hasText: text }).locator("xpath=ancestor::li[1]");
    const device = row("boiler room");
    await device.waitFor({ timeout: 15_000 }).catch(async (e: Error) => {
      await screenshot(page, "tour-failed");
      throw e;
    });
    if ((await device.getAttribute("aria-expanded")) !== "true") await device.locator(".toggle").first().click();
    const sensor = row("boiler temperature");
    await sensor.waitFor({ timeout: 15_000 }).catch(async (e: Error) => {
      await screenshot(page, "tour-failed");
      throw e;
    });
    await sensor.locator("a.label").first().click();
    const value = (type: string) => page.locator(`section[data-testid=node] tr[data-type="${type}"] td[data-testid=value]`);
    await value("temp").filter({ hasText: "21.5" }).waitFor({ timeout: 15_000 });
    await value("setpoint").filter({ hasText: "19" }).waitFor({ timeout: 15_000 });
    await screenshot(page, "tour-sensor");
    await page.close();
  });
});

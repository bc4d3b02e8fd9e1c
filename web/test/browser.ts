// Debian's Chromium, driven by playwright-core (which downloads no browser
// of its own): $CHROMIUM or /usr/bin/chromium. The flags keep it from
// reaching for the network on its own (this machine has none beyond
// loopback) and let it run as root in CI.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { repo } from "./siot.ts";

export const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-features=Translate,OptimizationHints,MediaRouter",
    ],
  });
}

/** Where screenshots go: web/.build/screenshots (kept after the run, to look at). */
export const shots = join(repo, "web", ".build", "screenshots");

/** Saves a full-page screenshot of page as shots/name.png and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(shots, { recursive: true });
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`# screenshot: ${path}`);
  return path;
}

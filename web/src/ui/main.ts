// The page's entry point: web/dist/app.js, served by `siot serve` on
// --http with index.html. The NATS it links over is the same origin's
// /nats (WebSocket).
import { App } from "./app.ts";

// The service worker keeps the page for reloads while the server is
// unreachable. Browsers allow it only in a secure context (HTTPS, or
// localhost); elsewhere the page still works, but needs the server to load.
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});

const root = document.getElementById("app");
if (root) {
  const ws = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/nats`;
  const app = new App(root, ws);
  app.boot().catch((e: unknown) => {
    root.textContent = `siot: cannot start: ${e instanceof Error ? e.message : String(e)}`;
  });
}

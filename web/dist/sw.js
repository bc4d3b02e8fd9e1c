// The web UI's service worker: it keeps the page's three files so that a
// reload works while the server is unreachable (the replica's data is in
// IndexedDB already). Network first: a server that answers always serves
// its own, current UI; the cache is only the fallback. It touches nothing
// else (not /nats, not the API).
const cacheName = "siot-ui";
const files = ["/","/app.js","/app.css","/nats-B3ENTHEZ.js","/nats-D5IGJTUK.js"];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(cacheName).then((c) => c.addAll(files)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (e) => {
  e.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== self.location.origin || !files.includes(url.pathname)) return;
  e.respondWith(
    fetch(e.request).then(
      (res) => {
        if (res.ok) {
          const copy = res.clone();
          e.waitUntil(caches.open(cacheName).then((c) => c.put(url.pathname, copy)));
        }
        return res;
      },
      () => caches.match(url.pathname).then((hit) => hit || Response.error()),
    ),
  );
});

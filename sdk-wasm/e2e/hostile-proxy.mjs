// A small HTTP proxy on loopback that stands between the SDK and the collector, the
// way a reverse proxy, a campus gateway, a captive portal or a load balancer does.
// In "pass" mode it forwards every request (method, path, headers, body) to the
// collector and copies its answer back (status, headers incl. CORS, body). In a
// hostile mode it answers itself, with a status and a body that are NOT the
// collector's JSON error form, while still answering CORS like the collector does
// (the proxy is another origin than the page: without CORS the browser would hide
// the status from the SDK and the test would prove nothing).
//
// Every request is logged with the event ids it carries (the `Idempotency-Key` of a
// single POST, `events[].id` of a `/batch` body) and who answered it.

import http from "node:http";
import { once } from "node:events";

/** Hostile answers, each as such a box really sends it. */
export const HOSTILE = {
  "404 reverse proxy during a deploy": {
    status: 404,
    headers: { "content-type": "text/html" },
    body: "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1></center><hr><center>nginx</center></body></html>",
  },
  "401 campus gateway": {
    status: 401,
    headers: { "content-type": "text/plain" },
    body: "Unauthorized: sign in to the campus network first",
  },
  "403 captive portal": {
    status: 403,
    headers: { "content-type": "text/html; charset=utf-8" },
    body: "<!doctype html><title>Access denied</title><p>Please accept the terms of use of Airport Wi-Fi.</p>",
  },
  "405 misconfigured load balancer": {
    status: 405,
    headers: { "content-type": "text/plain", allow: "GET, HEAD" },
    body: "Method Not Allowed",
  },
  "413 proxy body limit": {
    status: 413,
    headers: { "content-type": "text/html" },
    body: "<html><head><title>413 Request Entity Too Large</title></head><body><center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center></body></html>",
  },
  "401 OAuth gateway (JSON, not the collector's form)": {
    status: 401,
    headers: { "content-type": "application/json", "www-authenticate": 'Bearer error="invalid_token"' },
    body: '{"error":"invalid_token","error_description":"The access token expired"}',
  },
  "403 API gateway (JSON, not the collector's form)": {
    status: 403,
    headers: { "content-type": "application/json" },
    body: '{"message":"Forbidden"}',
  },
  "200 HTML page": {
    status: 200,
    headers: { "content-type": "text/html; charset=utf-8" },
    body: "<!doctype html><title>Welcome</title><h1>Welcome to Campus Wi-Fi</h1><form method=post><button>Connect</button></form>",
  },
};

/** Headers that belong to one hop, not to the request or answer as such. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"]);

/** The event ids a request to the collector carries. */
function idsOf(req, body) {
  const key = req.headers["idempotency-key"];
  if (key) return [key];
  if (req.method === "POST" && body.length) {
    try {
      return (JSON.parse(body.toString("utf8")).events || []).map((e) => e.id);
    } catch {
      return [];
    }
  }
  return [];
}

/**
 * Starts the proxy in front of `target` (e.g. the collector's URL) on a free loopback port.
 * `proxy.hostile = HOSTILE[...]` or `null` (pass through) may be changed at any time;
 * `proxy.bodyLimit = n` answers 413 (as `HOSTILE["413 proxy body limit"]`) to any request
 * body over n bytes, whatever the mode (a middle box with a smaller limit than the collector).
 * `proxy.forge = true` makes it a wrong endpoint: every POST is answered "written" as the
 * collector would, and forwarded nowhere (preflights are answered, other requests get HTML).
 * `proxy.loseReplies = true` forwards each POST but cuts the connection instead of relaying
 * the collector's answer (stored, yet the browser sees a network error).
 */
export async function startProxy(target) {
  const upstream = new URL(target);
  const proxy = { hostile: null, bodyLimit: Infinity, forge: false, loseReplies: false, log: [], url: "" };

  const answerCors = (req, extra = {}) => {
    // What the collector's CORS layer sends for an allowed origin.
    const origin = req.headers.origin;
    const headers = { ...extra, vary: "origin, access-control-request-method, access-control-request-headers" };
    if (origin) {
      headers["access-control-allow-origin"] = origin;
      headers["access-control-expose-headers"] = "retry-after";
    }
    return headers;
  };

  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const entry = { method: req.method, path: req.url, ids: idsOf(req, body), bytes: body.length, by: "", status: 0 };
    proxy.log.push(entry);

    if (proxy.forge && req.method === "POST") {
      // A wrong (or hostile) endpoint that answers every event as the collector would
      // when it stores it; nothing is stored anywhere.
      entry.by = "proxy";
      const ids = entry.ids;
      const reply = req.headers["idempotency-key"]
        ? { status: 201, body: { id: ids[0], status: "written" } }
        : { status: 200, body: { results: ids.map((id) => ({ id, status: "written" })) } };
      entry.status = reply.status;
      res.writeHead(reply.status, answerCors(req, { "content-type": "application/json" }));
      res.end(JSON.stringify(reply.body));
      return;
    }
    const refusal = proxy.forge ? HOSTILE["200 HTML page"] : body.length > proxy.bodyLimit ? HOSTILE["413 proxy body limit"] : proxy.hostile;
    if (refusal) {
      entry.by = "proxy";
      if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
        // The preflight, answered as the collector would: the browser then sends the
        // real request and shows the SDK the hostile status.
        entry.status = 200;
        res.writeHead(
          200,
          answerCors(req, {
            "access-control-allow-methods": "GET,POST,OPTIONS",
            "access-control-allow-headers": "content-type,idempotency-key,x-client-time",
            "access-control-max-age": "86400",
            "content-length": "0",
          }),
        );
        res.end();
        return;
      }
      entry.status = refusal.status;
      res.writeHead(refusal.status, answerCors(req, { ...refusal.headers, "content-length": Buffer.byteLength(refusal.body) }));
      res.end(refusal.body);
      return;
    }

    entry.by = "collector";
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k)) headers[k] = v;
    headers.host = upstream.host;
    if (body.length) headers["content-length"] = String(body.length);
    const forward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers });
    forward.on("error", (e) => {
      entry.status = 502;
      entry.error = e.message;
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end("bad gateway");
    });
    forward.on("response", async (up) => {
      const parts = [];
      for await (const c of up) parts.push(c);
      const answer = Buffer.concat(parts);
      entry.status = up.statusCode;
      if (proxy.loseReplies && req.method === "POST") {
        // The collector has handled it; the browser never hears back.
        entry.lost = true;
        res.destroy();
        return;
      }
      const copied = {};
      for (const [k, v] of Object.entries(up.headers)) if (!HOP_BY_HOP.has(k)) copied[k] = v;
      copied["content-length"] = String(answer.length);
      res.writeHead(up.statusCode, copied);
      res.end(answer);
    });
    forward.end(body);
  });
  server.keepAliveTimeout = 1000;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  proxy.close = () =>
    new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections?.();
    });
  /** How many POSTs carrying `id` the proxy itself answered (refused). */
  proxy.refusals = (id) => proxy.log.filter((e) => e.by === "proxy" && e.method === "POST" && e.ids.includes(id)).length;
  return proxy;
}

// Preload for test servers that call listen(port) without a host (e.g.
// @modelcontextprotocol/server-everything's sse/streamableHttp modes, which
// would otherwise bind every interface). Use:
//   node --import ./tests/peers/loopback-only.mjs <server.js> ...
// Any net.Server.listen() call that names a port but no host is bound to
// LISTEN_HOST (default 127.0.0.1) instead.
import net from "node:net";

const host = process.env.LISTEN_HOST || "127.0.0.1";
const origListen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    if (first.port !== undefined && first.host === undefined && first.path === undefined) {
      args[0] = { ...first, host };
    }
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] !== "string") {
      args.splice(1, 0, host);
    }
  }
  return origListen.apply(this, args);
};

// A stock @grpc/grpc-js client for interop tests: opens aranya.EdgeDevice/Sync
// as a device, sends `--count` messages and expects each one echoed back in
// order, then half-closes and waits for the status. Runs under Node (the point
// of the test) and under Deno. Prints one JSON line with the outcome and exits
// 0 whenever the exchange ran to a status (even a refusal); 1 on a timeout or
// a crash. Messages are raw bytes (identity serializers).
//
// Usage: node grpc_sync_client.mjs --target host:port --device ns/name
//   [--token T] [--ca ca.pem [--cert c.pem --key k.pem] [--server-name localhost]]
//   [--count 100] [--size 16] [--mode pipeline|pingpong] [--timeout-ms 20000]
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";

const { values: args } = parseArgs({
  options: {
    target: { type: "string" },
    device: { type: "string" },
    token: { type: "string" },
    ca: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    "server-name": { type: "string" },
    count: { type: "string", default: "100" },
    size: { type: "string", default: "16" },
    mode: { type: "string", default: "pipeline" },
    "timeout-ms": { type: "string", default: "20000" },
  },
});
if (!args.target || !args.device) {
  console.error("--target and --device are required");
  process.exit(1);
}
const count = Number(args.count);
const size = Math.max(4, Number(args.size));
const runtime = typeof Deno === "undefined"
  ? `node ${process.version}`
  : `deno ${Deno.version.deno}`;

const options = { "grpc.client_idle_timeout_ms": 1000 };
let credentials = grpc.credentials.createInsecure();
if (args.ca) {
  credentials = grpc.credentials.createSsl(
    readFileSync(args.ca),
    args.key ? readFileSync(args.key) : null,
    args.cert ? readFileSync(args.cert) : null,
  );
  if (args["server-name"]) {
    options["grpc.ssl_target_name_override"] = args["server-name"];
  }
}
const client = new grpc.Client(args.target, credentials, options);
const metadata = new grpc.Metadata();
metadata.set("x-arhat-device", args.device);
if (args.token) metadata.set("authorization", `Bearer ${args.token}`);
const identity = (b) => b;
const call = client.makeBidiStreamRequest(
  "/aranya.EdgeDevice/Sync",
  identity,
  identity,
  metadata,
);

const result = {
  runtime,
  accepted: false,
  sent: 0,
  received: 0,
  inOrder: true,
  status: -1,
  details: "",
  microsPerRoundTrip: 0,
};
const message = (i) => {
  const b = Buffer.alloc(size, 0x61);
  b.writeUInt32BE(i, 0);
  return b;
};

const timer = setTimeout(() => {
  console.log(JSON.stringify({ ...result, error: "timeout" }));
  process.exit(1);
}, Number(args["timeout-ms"]));

let onEcho = () => {};
call.on("error", () => {}); // the status event carries it
call.on("data", (buf) => {
  if (buf.length !== size || buf.readUInt32BE(0) !== result.received) {
    result.inOrder = false;
  }
  result.received++;
  onEcho();
});
call.on("status", (status) => {
  clearTimeout(timer);
  result.status = status.code;
  result.details = status.details;
  client.close();
  console.log(JSON.stringify(result));
  // Let grpc-js finish closing before the process ends by itself.
});
call.on("metadata", async () => {
  result.accepted = true;
  const started = performance.now();
  if (args.mode === "pingpong") {
    for (let i = 0; i < count; i++) {
      const echoed = new Promise((resolve) => onEcho = resolve);
      call.write(message(i));
      result.sent++;
      await echoed;
    }
  } else {
    const all = new Promise((resolve) => {
      onEcho = () => result.received === count && resolve();
    });
    for (let i = 0; i < count; i++) {
      await new Promise((resolve) => call.write(message(i), resolve));
      result.sent++;
    }
    if (count > 0) await all;
  }
  result.microsPerRoundTrip = Math.round(
    ((performance.now() - started) * 1000) / Math.max(count, 1),
  );
  call.end();
});

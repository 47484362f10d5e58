import assert from "node:assert/strict";
import { ConfigError } from "@aranya/common/config_reader";
import { InvalidInputError, NotFoundError } from "@aranya/common/errors";
import {
  type AranyaConfig,
  type AranyaFlags,
  loadAranyaConfig,
  parseAranyaConfig,
  parseAranyaFlags,
  parseListenAddress,
} from "./config.ts";

const MINIMAL = "links: {websocket: {}}\n";

/** The problems `text` (with `flags`) is refused with. */
function problemsOf(
  text: string,
  flags: AranyaFlags = {},
  env: Record<string, string> = {},
): readonly string[] {
  try {
    parseAranyaConfig(text, { env, flags, hostname: "h" });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `ConfigError expected, got ${err}`);
    assert.ok(err instanceof InvalidInputError);
    return err.problems;
  }
  assert.fail("config was accepted");
}

Deno.test("parseAranyaConfig() fills every default of a minimal config", () => {
  const config = parseAranyaConfig(MINIMAL, { env: {}, hostname: "aranya-7f9c" });
  assert.match(config.membership.identity, /^aranya-7f9c-[0-9a-f]{6}$/);
  const want: AranyaConfig = {
    namespaces: [],
    logLevel: "info",
    api: { qps: 500, burst: 1000, auth: { qps: 100, burst: 200 } },
    http: { listen: { hostname: "0.0.0.0", port: 8080 } },
    membership: {
      enabled: true,
      namespace: "aranya-system",
      name: "aranya",
      identity: config.membership.identity,
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
    },
    kubelet: {
      address: "127.0.0.1",
      listen: "0.0.0.0",
      port: 10250,
      portCount: 5000,
      streamCreationTimeoutMs: 30_000,
      streamIdleTimeoutMs: 4 * 3600_000,
      tls: { kind: "csr" },
    },
    node: { heartbeatMs: 10_000, leaseDurationMs: 40_000, statusSyncMs: 300_000 },
    pods: { syncIntervalMs: 60_000 },
    links: {
      websocket: {
        listen: { hostname: "0.0.0.0", port: 8443 },
        path: "/v1/link",
        keepaliveMs: 120_000,
      },
    },
  };
  assert.deepEqual(config, want);
  // Two replicas on one host get different identities.
  const other = parseAranyaConfig(MINIMAL, { env: {}, hostname: "aranya-7f9c" });
  assert.notEqual(other.membership.identity, config.membership.identity);
  // In a pod, the Lease lives in the pod's namespace by default.
  assert.equal(
    parseAranyaConfig(MINIMAL, { env: { POD_NAMESPACE: "edge-ops" } }).membership.namespace,
    "edge-ops",
  );
  assert.equal(
    parseAranyaConfig(MINIMAL, { env: {}, podNamespace: "from-sa" }).membership.namespace,
    "from-sa",
  );
});

Deno.test("parseAranyaConfig() reads every field of a full config", () => {
  const config = parseAranyaConfig(
    `
kubeconfig: /etc/aranya/kubeconfig
namespaces: [edge-a, edge-b, edge-a]
logLevel: debug
api: {qps: 2.5, burst: 7}
http: {listen: "127.0.0.1:9090"}
membership:
  enabled: false
  namespace: ops
  name: aranya.lock
  identity: replica-1
  leaseDuration: 30s
  renewDeadline: 20s
  retryPeriod: 500ms
kubelet: {address: "fd00::10", listen: "::", port: 11250, portCount: 50, clientCaFile: /tls/client-ca.crt, streamIdleTimeout: 30m, tls: {secret: {namespace: ops, name: kubelet-tls}}}
node: {heartbeat: 1s, leaseDuration: 5s, statusSync: 1m}
pods: {syncInterval: 15s}
links:
  websocket:
    listen: "[::]:443"
    path: /edge/link
    keepalive: 50s
    tls: {certFile: /tls/ws.crt, keyFile: /tls/ws.key, clientCaFile: /tls/ca.crt}
  grpc:
    listen: ":8444"
    tls: {certFile: /tls/g.crt, keyFile: /tls/g.key}
  mqtt:
    broker: mqtts://broker.example.com:8883
    username: aranya
    passwordFile: /secrets/mqtt-password
    dynamicSecurity: true
    keepalive: 1m30s
    tls: {caFile: /tls/ca.crt, certFile: /tls/m.crt, keyFile: /tls/m.key, serverName: broker.lan}
`,
    { env: {} },
  );
  const want: AranyaConfig = {
    kubeconfig: "/etc/aranya/kubeconfig",
    namespaces: ["edge-a", "edge-b"],
    logLevel: "debug",
    api: { qps: 2.5, burst: 7, auth: { qps: 100, burst: 200 } },
    http: { listen: { hostname: "127.0.0.1", port: 9090 } },
    membership: {
      enabled: false,
      namespace: "ops",
      name: "aranya.lock",
      identity: "replica-1",
      leaseDurationMs: 30_000,
      renewDeadlineMs: 20_000,
      retryPeriodMs: 500,
    },
    kubelet: {
      address: "fd00::10",
      listen: "::",
      port: 11250,
      portCount: 50,
      clientCaFile: "/tls/client-ca.crt",
      streamCreationTimeoutMs: 30_000,
      streamIdleTimeoutMs: 1_800_000,
      tls: { kind: "secret", namespace: "ops", name: "kubelet-tls" },
    },
    node: { heartbeatMs: 1000, leaseDurationMs: 5000, statusSyncMs: 60_000 },
    pods: { syncIntervalMs: 15_000 },
    links: {
      websocket: {
        listen: { hostname: "::", port: 443 },
        path: "/edge/link",
        keepaliveMs: 50_000,
        tls: { certFile: "/tls/ws.crt", keyFile: "/tls/ws.key", clientCaFile: "/tls/ca.crt" },
      },
      grpc: {
        listen: { hostname: "0.0.0.0", port: 8444 },
        keepaliveMs: 240_000,
        tls: { certFile: "/tls/g.crt", keyFile: "/tls/g.key" },
      },
      mqtt: {
        broker: "mqtts://broker.example.com:8883",
        username: "aranya",
        passwordFile: "/secrets/mqtt-password",
        dynamicSecurity: true,
        keepaliveSeconds: 90,
        tls: {
          caFile: "/tls/ca.crt",
          certFile: "/tls/m.crt",
          keyFile: "/tls/m.key",
          serverName: "broker.lan",
        },
      },
    },
  };
  assert.deepEqual(config, want);
});

Deno.test("parseAranyaConfig() expands ${VAR} in values of every type", () => {
  const text = `
logLevel: \${LOG_LEVEL:-warn}
api: {qps: "\${QPS}"}
membership: {enabled: "\${ELECT}", leaseDuration: "\${LEASE}", renewDeadline: 5s, retryPeriod: 1s}
links: {mqtt: {broker: "mqtt://\${BROKER}"}}
`;
  const config = parseAranyaConfig(text, {
    env: { QPS: "20", ELECT: "false", LEASE: "6s", BROKER: "127.0.0.1:1883" },
  });
  assert.equal(config.logLevel, "warn");
  assert.equal(config.api.qps, 20);
  assert.equal(config.membership.enabled, false);
  assert.equal(config.membership.leaseDurationMs, 6000);
  assert.deepEqual(config.links, {
    mqtt: { broker: "mqtt://127.0.0.1:1883", dynamicSecurity: false, keepaliveSeconds: 300 },
  });
  assert.deepEqual(problemsOf(text, {}, { ELECT: "false", LEASE: "6s", BROKER: "b" }), [
    'api.qps: environment variable "QPS" is not set and "${QPS}" gives no default',
  ]);
});

Deno.test("flags override the file", () => {
  const file = `
kubeconfig: /etc/aranya/kubeconfig
namespaces: [from-file]
logLevel: warn
http: {listen: "0.0.0.0:8080"}
membership: {enabled: true, identity: file-id}
links: {grpc: {}}
`;
  const flags = parseAranyaFlags([
    "--kubeconfig",
    "rel/kubeconfig",
    "--namespace",
    "a",
    "--namespace=b",
    "--membership=false",
    "--identity",
    "flag-id",
    "--http-listen",
    "127.0.0.1:0",
    "--log-level",
    "debug",
  ]);
  assert.deepEqual(flags, {
    kubeconfig: "rel/kubeconfig",
    namespaces: ["a", "b"],
    membershipFlag: "false",
    identity: "flag-id",
    httpListen: "127.0.0.1:0",
    logLevel: "debug",
  });
  const config = parseAranyaConfig(file, { env: {}, flags });
  assert.equal(config.kubeconfig, "rel/kubeconfig");
  assert.deepEqual(config.namespaces, ["a", "b"]);
  assert.equal(config.membership.enabled, false);
  assert.equal(config.membership.identity, "flag-id");
  assert.deepEqual(config.http.listen, { hostname: "127.0.0.1", port: 0 });
  assert.equal(config.logLevel, "debug");
  // A bare --membership means true; absent flags leave the file's values.
  const on = parseAranyaConfig(file.replace("enabled: true", "enabled: false"), {
    env: {},
    flags: parseAranyaFlags(["--membership", "-c", "/x.yaml"]),
  });
  assert.equal(on.membership.enabled, true);
  assert.equal(on.membership.identity, "file-id");
  assert.deepEqual(on.namespaces, ["from-file"]);
  assert.equal(on.logLevel, "warn");
});

Deno.test("parseAranyaFlags() refuses unknown flags, missing values and arguments", () => {
  for (const argv of [["--bogus"], ["--identity"], ["extra"], ["--membership", "false"]]) {
    assert.throws(() => parseAranyaFlags(argv), (err: unknown) => {
      assert.ok(err instanceof ConfigError, `${argv}: ${err}`);
      assert.ok(err.message.startsWith("Invalid aranya command line (1 problem):"), err.message);
      return true;
    });
  }
});

Deno.test("parseAranyaConfig() names the field of every problem", () => {
  const cases: [string, string, AranyaFlags, string[]][] = [
    ["empty file", "", {}, ["links: is required"]],
    ["not a mapping", "- a\n", {}, ["the config must be a mapping; got a list"]],
    ["no link", "links: {}\n", {}, ["links: must set at least one of websocket, grpc, mqtt"]],
    ["links not a mapping", "links: [websocket]\n", {}, ["links: must be a mapping; got a list"]],
    [
      "unknown fields at every level",
      MINIMAL + "bogus: 1\napi: {qpss: 5}\nlinks2: {}\n",
      {},
      ["api.qpss: unknown field", "bogus: unknown field", "links2: unknown field"],
    ],
    [
      "unknown link and link field",
      "links: {websocket: {port: 1}, coap: {}}\n",
      {},
      ["links.websocket.port: unknown field", "links.coap: unknown field"],
    ],
    [
      "types and ranges",
      MINIMAL +
      "kubeconfig: rel/kc\nnamespaces: [Bad_NS]\nlogLevel: loud\napi: {qps: 0, burst: 1.5}\nkubelet: {address: example.com, port: 0, tls: {csr: {}, secret: {namespace: a, name: b}}}\n",
      {},
      [
        'kubeconfig: must be an absolute path; got "rel/kc"',
        'namespaces[0]: must be a DNS label (lowercase letters, digits and "-", at most 63 characters); got "Bad_NS"',
        'logLevel: must be one of "debug", "info", "warn", "error"; got "loud"',
        "api.qps: must be between 0.01 and 100000; got 0",
        "api.burst: must be an integer; got 1.5",
        'kubelet.address: must be an IPv4 or IPv6 address; got "example.com"',
        "kubelet.port: must be between 1 and 65535; got 0",
        'kubelet.tls.secret: only one of "csr", "secret" and "certFile" may be set',
      ],
    ],
    [
      "durations",
      MINIMAL +
      "membership: {leaseDuration: 1.5s, renewDeadline: soon, retryPeriod: 10}\nnode: {heartbeat: 1m, leaseDuration: 40s}\n",
      {},
      [
        "membership.leaseDuration: must be whole seconds; got 1500ms",
        'membership.renewDeadline: must be a duration such as "10s", "1m30s" or "500ms"; got "soon"',
        "membership.retryPeriod: must be a string; got 10",
        "node.heartbeat: must be shorter than leaseDuration (40000ms); got 60000ms",
      ],
    ],
    [
      "retry period not below the renew deadline",
      MINIMAL + "membership: {leaseDuration: 3s, renewDeadline: 2s, retryPeriod: 2s}\n",
      {},
      ["membership.retryPeriod: must be shorter than renewDeadline (2000ms); got 2000ms"],
    ],
    [
      "listen addresses",
      'http: {listen: "8080"}\nlinks: {websocket: {listen: "0.0.0.0:70000", path: v1}, grpc: {listen: "[zz]:1"}}\n',
      {},
      [
        'http.listen: must be "host:port" with an IP address, a host name or a bracketed IPv6 address, and a port from 0 to 65535; got "8080"',
        'links.websocket.listen: must be "host:port" with an IP address, a host name or a bracketed IPv6 address, and a port from 0 to 65535; got "0.0.0.0:70000"',
        'links.websocket.path: must be a URL path starting with "/"; got "v1"',
        'links.grpc.listen: must be "host:port" with an IP address, a host name or a bracketed IPv6 address, and a port from 0 to 65535; got "[zz]:1"',
      ],
    ],
    [
      "two listeners on one port",
      'links: {websocket: {listen: "127.0.0.1:8443"}, grpc: {listen: "[::]:8443"}}\n',
      { httpListen: ":8443" },
      [
        "links.websocket.listen: port 8443 is already used by --http-listen",
        "links.grpc.listen: port 8443 is already used by --http-listen",
      ],
    ],
    [
      "one port on two addresses, or in the file",
      'http: {listen: "127.0.0.1:8443"}\nlinks: {websocket: {listen: "127.0.0.2:8443"}, grpc: {listen: "127.0.0.2:8443"}}\n',
      {},
      ["links.grpc.listen: port 8443 is already used by links.websocket.listen"],
    ],
    [
      "TLS",
      "links:\n  websocket: {tls: {certFile: /c}}\n  grpc: {tls: {keyFile: k, ca: /x}}\n",
      {},
      [
        "links.websocket.tls.keyFile: is required",
        "links.grpc.tls.certFile: is required",
        'links.grpc.tls.keyFile: must be an absolute path; got "k"',
        "links.grpc.tls.ca: unknown field",
      ],
    ],
    [
      "mqtt",
      "links: {mqtt: {broker: 'tcp://b:1883', passwordFile: /p, tls: {certFile: /c, serverName: 'a b'}}}\n",
      {},
      [
        'links.mqtt.broker: must be a mqtt:// or mqtts:// URL; got "tcp://b:1883"',
        "links.mqtt.username: is required when passwordFile is set",
        'links.mqtt.tls.serverName: must be a DNS name; got "a b"',
        "links.mqtt.tls.keyFile: is required when certFile is set",
      ],
    ],
    [
      "mqtt client certificate over plain mqtt, missing broker",
      "links: {mqtt: {broker: 'mqtt://b:1883', tls: {certFile: /c, keyFile: /k}}, grpc: {}}\n",
      {},
      ["links.mqtt.tls: a client certificate needs an mqtts:// broker"],
    ],
    ["mqtt without broker", "links: {mqtt: {username: u}}\n", {}, [
      "links.mqtt.broker: is required",
    ]],
    [
      "mqtt keepalive not in whole seconds",
      "links: {mqtt: {broker: 'mqtt://b:1883', keepalive: 1500ms}}\n",
      {},
      ["links.mqtt.keepalive: must be whole seconds; got 1500ms"],
    ],
    [
      "mqtt keepalive too short",
      "links: {mqtt: {broker: 'mqtt://b:1883', keepalive: 0s}}\n",
      {},
      ['links.mqtt.keepalive: must be at least 1000ms; got "0s"'],
    ],
    [
      "mqtt keepalive beyond MQTT's limit",
      "links: {mqtt: {broker: 'mqtt://b:1883', keepalive: 20h}}\n",
      {},
      ["links.mqtt.keepalive: must be at most 65535s (MQTT's limit); got 72000000ms"],
    ],
    [
      "mqtt keepalive not a duration",
      "links: {mqtt: {broker: 'mqtt://b:1883', keepalive: 300}}\n",
      {},
      ["links.mqtt.keepalive: must be a string; got 300"],
    ],
    [
      "bad flags",
      MINIMAL,
      {
        kubeconfig: "",
        namespaces: ["ok", "NOT OK"],
        membershipFlag: "yes",
        identity: "",
        httpListen: "localhost",
        logLevel: "trace",
      },
      [
        "--kubeconfig: must not be empty",
        '--namespace: must be a DNS label (lowercase letters, digits and "-", at most 63 characters); got "NOT OK"',
        '--membership: must be true or false; got "yes"',
        '--identity: must be a DNS subdomain (lowercase letters, digits, "-" and ".", at most 253 characters); got ""',
        '--http-listen: must be "host:port" with an IP address, a host name or a bracketed IPv6 address, and a port from 0 to 65535; got "localhost"',
        '--log-level: must be one of "debug", "info", "warn", "error"; got "trace"',
      ],
    ],
  ];
  for (const [name, text, flags, want] of cases) {
    assert.deepEqual(problemsOf(text, flags), want, name);
  }
});

Deno.test("parseAranyaConfig() throws one error listing file and flag problems", () => {
  assert.throws(
    () =>
      parseAranyaConfig("api: {burst: 0}\nlinks: {}\n", {
        env: {},
        flags: { logLevel: "loud" },
      }),
    (err: unknown) => {
      assert.ok(err instanceof InvalidInputError);
      assert.equal(
        err.message,
        [
          "Invalid aranya config (3 problems):",
          "  - api.burst: must be between 1 and 100000; got 0",
          "  - links: must set at least one of websocket, grpc, mqtt",
          '  - --log-level: must be one of "debug", "info", "warn", "error"; got "loud"',
        ].join("\n"),
      );
      return true;
    },
  );
});

Deno.test("parseAranyaConfig() refuses invalid YAML and duplicate keys", () => {
  const syntax = problemsOf("links: {websocket: {}\n");
  assert.equal(syntax.length, 1);
  assert.match(syntax[0]!, /^YAML: .* at line \d+, column \d+/);
  const dup = problemsOf(MINIMAL + "logLevel: info\nlogLevel: debug\n");
  assert.equal(dup.length, 1);
  assert.match(dup[0]!, /^YAML: Map keys must be unique/);
});

Deno.test("parseListenAddress() takes host:port forms", () => {
  assert.deepEqual(parseListenAddress("0.0.0.0:8080"), { hostname: "0.0.0.0", port: 8080 });
  assert.deepEqual(parseListenAddress(":0"), { hostname: "0.0.0.0", port: 0 });
  assert.deepEqual(parseListenAddress("localhost:1"), { hostname: "localhost", port: 1 });
  assert.deepEqual(parseListenAddress("[::1]:65535"), { hostname: "::1", port: 65535 });
  for (
    const bad of ["8080", "::1:80", "1.2.3.256:80", "h:65536", "h:-1", "a b:80", "[]:80", "h:"]
  ) {
    assert.equal(parseListenAddress(bad), undefined, bad);
  }
});

Deno.test("loadAranyaConfig() reads --config, applies the other flags and names the file", async () => {
  const dir = new URL("../.cache/test-state/", import.meta.url).pathname + crypto.randomUUID();
  await Deno.mkdir(dir, { recursive: true });
  try {
    await Deno.writeTextFile(`${dir}/ok.yaml`, MINIMAL + "logLevel: warn\n");
    const config = await loadAranyaConfig(
      ["--config", `${dir}/ok.yaml`, "--log-level=error", "--namespace", "edge"],
      {},
    );
    assert.equal(config.logLevel, "error");
    assert.deepEqual(config.namespaces, ["edge"]);
    assert.ok(config.links.websocket);
    await Deno.writeTextFile(`${dir}/bad.yaml`, "links: {grpc: {listen: nope}}\n");
    await assert.rejects(
      loadAranyaConfig(["-c", `${dir}/bad.yaml`, "--membership=maybe"], {}),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.deepEqual(err.problems, [
          'links.grpc.listen: must be "host:port" with an IP address, a host name or a bracketed IPv6 address, and a port from 0 to 65535; got "nope"',
          '--membership: must be true or false; got "maybe"',
        ]);
        assert.ok(err.message.startsWith(`Invalid aranya config "${dir}/bad.yaml" (2 problems):`));
        return true;
      },
    );
    await assert.rejects(loadAranyaConfig(["-c", `${dir}/missing.yaml`], {}), NotFoundError);
    await assert.rejects(loadAranyaConfig(["--nope"], {}), ConfigError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the documented sample config parses", async () => {
  const path = new URL("../deploy/aranya/config.sample.yaml", import.meta.url).pathname;
  const config = await loadAranyaConfig(["--config", path], { POD_NAMESPACE: "aranya-system" });
  assert.deepEqual(Object.keys(config.links).sort(), ["grpc", "mqtt", "websocket"]);
  assert.equal(config.membership.namespace, "aranya-system");
  assert.equal(config.api.qps, 500);
  assert.equal(config.kubeconfig, undefined);
  assert.equal(config.links.mqtt?.broker, "mqtts://mosquitto.aranya-system.svc:8883");
  assert.equal(config.links.mqtt?.dynamicSecurity, true);
  assert.equal(config.links.mqtt?.keepaliveSeconds, 300);
  const custom = await loadAranyaConfig(["--config", path], {
    ARANYA_MQTT_BROKER: "mqtts://broker.lan:8883",
  });
  assert.equal(custom.links.mqtt?.broker, "mqtts://broker.lan:8883");
});

Deno.test("membership: the identity names Leases; the old leaderElection section is refused", () => {
  assert.deepEqual(problemsOf(MINIMAL + "membership: {identity: Replica_1}\n"), [
    'membership.identity: must be a DNS subdomain (lowercase letters, digits, "-" and ".", at most 253 characters); got "Replica_1"',
  ]);
  assert.deepEqual(problemsOf(MINIMAL, { identity: "r".repeat(64) }), [
    `--identity: must be at most 63 characters; got "${"r".repeat(64)}"`,
  ]);
  assert.equal(problemsOf(MINIMAL + "leaderElection: {enabled: true}\n").length, 1);
  assert.match(problemsOf(MINIMAL + "leaderElection: {enabled: true}\n")[0]!, /^leaderElection: /);
  // A host name that is no DNS name still gives a usable default identity.
  const config = parseAranyaConfig(MINIMAL, { env: {}, hostname: "My_Host.Local" });
  assert.match(config.membership.identity, /^my-host\.local-[0-9a-f]{6}$/);
});

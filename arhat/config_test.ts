import assert from "node:assert/strict";
import { ConfigError } from "@aranya/common/config_reader";
import { InvalidInputError, NotFoundError } from "@aranya/common/errors";
import { type ArhatConfig, loadArhatConfig, parseConfig } from "./config.ts";

const MINIMAL = `
device: {namespace: edge, name: dev1}
connectivity:
  methods:
    - method: websocket
      url: wss://aranya.example.com/v1/link
      token: t0ken
`;

const DEFAULT_BACKOFF = { initialMs: 1000, maxMs: 30_000, factor: 1.5 };

/** The problems `text` is refused with. */
function problemsOf(text: string, env: Record<string, string> = {}): readonly string[] {
  try {
    parseConfig(text, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `ConfigError expected, got ${err}`);
    assert.ok(err instanceof InvalidInputError);
    return err.problems;
  }
  assert.fail("config was accepted");
}

Deno.test("parseConfig() fills every default of a minimal config", () => {
  const want: ArhatConfig = {
    device: { namespace: "edge", name: "dev1" },
    stateDir: "/var/lib/arhat",
    log: { level: "info" },
    runtime: {
      endpoint: "/var/run/docker.sock",
      infraImage: "registry.k8s.io/pause:3.10",
      podNetwork: "bridge",
      pullTimeoutSeconds: 300,
    },
    host: { allowExec: false, allowAttach: false, allowLogs: false, allowPortForward: false },
    nodeStatus: {
      memoryAvailablePercent: 5,
      diskAvailablePercent: 10,
      pidsAvailablePercent: 5,
      maxPods: 110,
      checkIntervalMs: 30_000,
      maxIntervalMs: 3_600_000,
    },
    connectivity: {
      methods: [{
        method: "websocket",
        url: "wss://aranya.example.com/v1/link",
        token: "t0ken",
        priority: 0,
        dialTimeoutMs: 15_000,
        insecure: false,
        backoff: DEFAULT_BACKOFF,
      }],
    },
  };
  assert.deepEqual(parseConfig(MINIMAL, {}), want);
});

Deno.test("parseConfig() reads every field of a full config", () => {
  const config = parseConfig(
    `
device: {namespace: edge, name: dev1.site-a}
stateDir: /srv/arhat
log: {level: debug}
runtime:
  endpoint: /tmp/aranya-e2e/podman.sock
  infraImage: localhost:5000/aranya-e2e/busybox:test
  infraCommand: [sleep, "2147483647"]
  podNetwork: edge-net
  pullTimeoutSeconds: 60
host: {allowExec: true, allowAttach: true, allowLogs: true, allowPortForward: true, logDir: /var/log}
nodeStatus:
  memoryAvailablePercent: 2.5
  diskAvailablePercent: 0
  pidsAvailablePercent: 1
  maxPods: 20
  checkInterval: 1m30s
connectivity:
  backoff: {initialDelay: 500ms, maxDelay: 1m, factor: 2}
  methods:
    - method: mqtt
      priority: 5
      broker: mqtts://broker.example.com:8883
      tokenFile: /etc/arhat/token
      dialTimeout: 5s
      tls: {caFile: /etc/arhat/ca.crt, certFile: /etc/arhat/c.crt, keyFile: /etc/arhat/c.key, serverName: broker.example.com}
      mqtt: {messageNamespace: aranya/edge/dev1, keepaliveSeconds: 30, clientId: dev1, username: u, password: p}
      backoff: {maxDelay: 3m}
    - method: grpc
      target: "[::1]:8443"
      tls: {certFile: /etc/arhat/c.crt, keyFile: /etc/arhat/c.key}
`,
    {},
  );
  assert.deepEqual(config.runtime, {
    endpoint: "/tmp/aranya-e2e/podman.sock",
    infraImage: "localhost:5000/aranya-e2e/busybox:test",
    infraCommand: ["sleep", "2147483647"],
    podNetwork: "edge-net",
    pullTimeoutSeconds: 60,
  });
  assert.deepEqual(config.host, {
    allowExec: true,
    allowAttach: true,
    allowLogs: true,
    allowPortForward: true,
    logDir: "/var/log",
  });
  assert.deepEqual(config.nodeStatus, {
    memoryAvailablePercent: 2.5,
    diskAvailablePercent: 0,
    pidsAvailablePercent: 1,
    maxPods: 20,
    checkIntervalMs: 90_000,
    maxIntervalMs: 3_600_000,
  });
  assert.deepEqual(config.connectivity.methods, [
    {
      method: "mqtt",
      priority: 5,
      broker: "mqtts://broker.example.com:8883",
      tokenFile: "/etc/arhat/token",
      dialTimeoutMs: 5000,
      insecure: false,
      tls: {
        caFile: "/etc/arhat/ca.crt",
        certFile: "/etc/arhat/c.crt",
        keyFile: "/etc/arhat/c.key",
        serverName: "broker.example.com",
      },
      mqtt: {
        messageNamespace: "aranya/edge/dev1",
        keepaliveSeconds: 30,
        clientId: "dev1",
        username: "u",
        password: "p",
      },
      // Method-level fields override the connectivity-level back-off one by one.
      backoff: { initialMs: 500, maxMs: 180_000, factor: 2 },
    },
    {
      method: "grpc",
      priority: 1, // its index
      target: "[::1]:8443",
      tls: { certFile: "/etc/arhat/c.crt", keyFile: "/etc/arhat/c.key" },
      dialTimeoutMs: 15_000,
      insecure: false,
      backoff: { initialMs: 500, maxMs: 60_000, factor: 2 },
    },
  ]);
  assert.equal(config.stateDir, "/srv/arhat");
  assert.equal(config.log.level, "debug");
});

Deno.test("parseConfig() expands ${VAR} and ${VAR:-default} in values of every type", () => {
  const text = `
device: {namespace: "\${NS:-edge}", name: "\${NAME}"}
stateDir: \${STATE_DIR:-/var/lib/arhat}
host: {allowExec: "\${ALLOW_EXEC}"}
nodeStatus: {maxPods: "\${MAX_PODS:-7}", checkInterval: "\${INTERVAL}"}
runtime: {infraImage: "$\${literal}"}
connectivity:
  methods:
    - method: "\${METHOD}"
      url: wss://\${HOST}/v1/link
      token: "\${TOKEN}"
`;
  const config = parseConfig(text, {
    NAME: "dev-9",
    STATE_DIR: "",
    ALLOW_EXEC: "true",
    INTERVAL: "2m",
    METHOD: "websocket",
    HOST: "aranya.lan:8443",
    TOKEN: "s3cret",
  });
  assert.deepEqual(config.device, { namespace: "edge", name: "dev-9" });
  assert.equal(config.stateDir, "/var/lib/arhat"); // empty variable: the default applies
  assert.equal(config.host.allowExec, true);
  assert.equal(config.nodeStatus.maxPods, 7);
  assert.equal(config.nodeStatus.checkIntervalMs, 120_000);
  assert.equal(config.runtime.infraImage, "${literal}");
  const m = config.connectivity.methods[0];
  assert.equal(m?.method, "websocket");
  assert.equal(m.method === "websocket" && m.url, "wss://aranya.lan:8443/v1/link");
  assert.equal(m.token, "s3cret");

  // An unset variable without default names the field and the variable.
  assert.deepEqual(
    problemsOf(text, { ALLOW_EXEC: "yes", INTERVAL: "2m", METHOD: "websocket", HOST: "h" }),
    [
      'device.name: environment variable "NAME" is not set and "${NAME}" gives no default',
      'host.allowExec: must be true or false; got "yes"',
      'connectivity.methods[0].token: environment variable "TOKEN" is not set and "${TOKEN}" gives no default',
    ],
  );
});

const CLEAR =
  "sends the device's token and its pods' Secrets in clear; use TLS, or set insecure: true to allow it";

Deno.test("parseConfig() names the field of every problem", () => {
  const base = (methods: string, extra = "") =>
    `device: {namespace: edge, name: dev1}\n${extra}\nconnectivity:\n  methods:\n${methods}`;
  const ws = "    - {method: websocket, url: 'wss://a.example.com/v1/link', token: t}\n";
  const cases: [string, string, string[]][] = [
    ["empty file", "", ["device: is required", "connectivity: is required"]],
    ["not a mapping", "- a\n- b\n", ["the config must be a mapping; got a list"]],
    [
      "unknown method",
      base(ws + "    - {method: coap, url: 'coap://x'}\n"),
      ['connectivity.methods[1].method: must be one of "websocket", "mqtt", "grpc"; got "coap"'],
    ],
    [
      "bad device names",
      "device: {namespace: Edge_NS, name: -dev}\nconnectivity: {methods: []}\n",
      [
        'device.namespace: must be a DNS label (lowercase letters, digits and "-", at most 63 characters); got "Edge_NS"',
        'device.name: must be a DNS subdomain (lowercase letters, digits, "-" and ".", at most 253 characters); got "-dev"',
        "connectivity.methods: must list at least one method",
      ],
    ],
    [
      "typos and wrong types",
      base(
        ws,
        "stateDir: var/lib\nhost: {allowExce: true, allowLogs: 1}\nlog: {level: verbose}\nnodeStatus: {maxPods: 1.5, diskAvailablePercent: 101, checkInterval: 10}",
      ),
      [
        'stateDir: must be an absolute path; got "var/lib"',
        'log.level: must be one of "debug", "info", "warn", "error"; got "verbose"',
        "host.allowLogs: must be true or false; got 1",
        "host.allowExce: unknown field",
        "nodeStatus.diskAvailablePercent: must be between 0 and 100; got 101",
        "nodeStatus.maxPods: must be an integer; got 1.5",
        "nodeStatus.checkInterval: must be a string; got 10",
      ],
    ],
    [
      "runtime",
      base(
        ws,
        "runtime: {endpoint: 'tcp://1.2.3.4:2375', infraImage: 'a b', infraCommand: [], podNetwork: host, pullTimeoutSeconds: 0, extra: 1}",
      ),
      [
        'runtime.endpoint: must be a Unix socket path, "/path" or "unix:///path"; got "tcp://1.2.3.4:2375"',
        'runtime.infraImage: must be an image reference without spaces; got "a b"',
        'runtime.podNetwork: must be "bridge", "none" or a network name; host networking is asked per pod (hostNetwork); got "host"',
        "runtime.pullTimeoutSeconds: must be at least 1; got 0",
        "runtime.infraCommand: must not be empty when set",
        "runtime.extra: unknown field",
      ],
    ],
    [
      "websocket",
      base(
        "    - {method: websocket, url: 'https://a/v1/link', priority: -1, tls: {certFile: /c.crt}, broker: 'mqtt://b:1883', dialTimeout: soon}\n",
      ),
      [
        "connectivity.methods[0].priority: must be at least 0; got -1",
        'connectivity.methods[0].dialTimeout: must be a duration such as "10s", "1m30s" or "500ms"; got "soon"',
        "connectivity.methods[0].tls.keyFile: is required when certFile is set",
        'connectivity.methods[0].url: must be a ws:// or wss:// URL; got "https://a/v1/link"',
        'connectivity.methods[0].broker: not used by method "websocket"',
      ],
    ],
    [
      "websocket without credentials, client cert over ws://",
      base(
        "    - {method: websocket, url: 'ws://a/v1/link'}\n    - {method: websocket, url: 'ws://a/v1/link', tls: {certFile: /c, keyFile: /k}}\n",
      ),
      [
        `connectivity.methods[0].url: "ws://" ${CLEAR}`,
        "connectivity.methods[0].token: set token, tokenFile or a client certificate (tls.certFile and tls.keyFile)",
        "connectivity.methods[1].tls: a client certificate needs a wss:// url",
      ],
    ],
    [
      "plaintext only with insecure: true; gRPC h2c and tls exclude each other",
      base(
        "    - {method: websocket, url: 'ws://a/v1/link', token: t, insecure: true}\n    - {method: grpc, target: 'a:1', token: t, insecure: true, tls: {caFile: /ca}}\n    - {method: mqtt, broker: 'mqtt://b:1883', token: t, insecure: yes, mqtt: {messageNamespace: n}}\n",
      ),
      [
        "connectivity.methods[1].insecure: insecure (h2c) and tls exclude each other",
        'connectivity.methods[2].insecure: must be true or false; got "yes"',
        `connectivity.methods[2].broker: "mqtt://" ${CLEAR}`,
      ],
    ],
    [
      "mqtt",
      base(
        "    - {method: mqtt, broker: 'tcp://b:1883', token: '', tokenFile: rel/token, mqtt: {messageNamespace: 'a/#/', keepaliveSeconds: 70000, qos: 2}}\n",
      ),
      [
        "connectivity.methods[0].token: must not be empty",
        'connectivity.methods[0].tokenFile: must be an absolute path; got "rel/token"',
        'connectivity.methods[0].broker: must be a mqtt:// or mqtts:// URL; got "tcp://b:1883"',
        'connectivity.methods[0].mqtt.messageNamespace: must be an MQTT topic prefix of 1 to 200 characters, without "+", "#" or NUL, not starting with "$" nor ending with "/"; got "a/#/"',
        "connectivity.methods[0].mqtt.keepaliveSeconds: must be between 1 and 65535; got 70000",
        "connectivity.methods[0].mqtt.qos: unknown field",
      ],
    ],
    [
      "mqtt without its section, token and tokenFile both",
      base("    - {method: mqtt, broker: 'mqtt://b:1883', token: t, tokenFile: /t}\n"),
      [
        "connectivity.methods[0].token: set either token or tokenFile, not both",
        `connectivity.methods[0].broker: "mqtt://" ${CLEAR}`,
        "connectivity.methods[0].mqtt: is required",
      ],
    ],
    [
      "grpc and back-off",
      base(
        "    - {method: grpc, target: 'aranya.example.com', token: t, backoff: {initialDelay: 1m, maxDelay: 10s, factor: 0.5}}\n    - {method: grpc, target: 'h:99999', token: t}\n",
      ),
      [
        "connectivity.methods[0].backoff.factor: must be between 1 and 10; got 0.5",
        "connectivity.methods[0].backoff.maxDelay: must not be shorter than the initial delay (60000ms); got 10000ms",
        'connectivity.methods[0].target: must be host:port; got "aranya.example.com"',
        'connectivity.methods[1].target: must be host:port; got "h:99999"',
      ],
    ],
    [
      "secrets are never echoed",
      base(
        "    - {method: mqtt, broker: 'mqtts://b:8883', token: 12345, mqtt: {messageNamespace: n, password: 67890}}\n",
      ),
      [
        "connectivity.methods[0].token: must be a string; got number",
        "connectivity.methods[0].mqtt.password: must be a string; got number",
      ],
    ],
  ];
  for (const [name, text, want] of cases) assert.deepEqual(problemsOf(text), want, name);
});

Deno.test("parseConfig() throws one error listing every problem", () => {
  const text = "device: {namespace: edge}\nconnectivity: {methods: [{method: coap}]}\nbogus: 1\n";
  assert.throws(() => parseConfig(text, {}), (err: unknown) => {
    assert.ok(err instanceof InvalidInputError);
    assert.equal(
      err.message,
      [
        "Invalid arhat config (3 problems):",
        "  - device.name: is required",
        '  - connectivity.methods[0].method: must be one of "websocket", "mqtt", "grpc"; got "coap"',
        "  - bogus: unknown field",
      ].join("\n"),
    );
    return true;
  });
});

Deno.test("parseConfig() refuses invalid YAML and duplicate keys", () => {
  const syntax = problemsOf("device: {namespace: edge\n");
  assert.equal(syntax.length, 1);
  assert.match(syntax[0]!, /^YAML: .* at line \d+, column \d+/);
  const dup = problemsOf(MINIMAL + "stateDir: /a\nstateDir: /b\n");
  assert.equal(dup.length, 1);
  assert.match(dup[0]!, /^YAML: Map keys must be unique/);
});

Deno.test("loadArhatConfig() reads a file and names it in errors", async () => {
  const dir = new URL("../.cache/test-state/", import.meta.url).pathname + crypto.randomUUID();
  await Deno.mkdir(dir, { recursive: true });
  try {
    await Deno.writeTextFile(`${dir}/ok.yaml`, MINIMAL);
    assert.equal((await loadArhatConfig(`${dir}/ok.yaml`, {})).device.name, "dev1");
    await Deno.writeTextFile(`${dir}/bad.yaml`, "device: 1\nconnectivity: {methods: [x]}\n");
    await assert.rejects(loadArhatConfig(`${dir}/bad.yaml`, {}), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        "device: must be a mapping; got 1",
        'connectivity.methods[0]: must be a mapping; got "x"',
      ]);
      assert.ok(err.message.startsWith(`Invalid arhat config "${dir}/bad.yaml" (2 problems):`));
      return true;
    });
    await assert.rejects(loadArhatConfig(`${dir}/missing.yaml`, {}), NotFoundError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the documented sample config parses", async () => {
  const path = new URL("../deploy/arhat/config.sample.yaml", import.meta.url).pathname;
  const config = await loadArhatConfig(path, {});
  assert.deepEqual(config.device, { namespace: "edge", name: "example-edge-device-ws" });
  assert.deepEqual(config.connectivity.methods.map((m) => [m.method, m.priority]), [
    ["websocket", 0],
    ["mqtt", 1],
    ["grpc", 2],
  ]);
  assert.deepEqual(config.host, {
    allowExec: false,
    allowAttach: false,
    allowLogs: false,
    allowPortForward: false,
  });
  const mqtt = config.connectivity.methods[1];
  assert.ok(mqtt?.method === "mqtt");
  assert.equal(mqtt.mqtt.messageNamespace, "/aranya.arhat.dev/edge/example-edge-device-ws");
  assert.deepEqual(mqtt.backoff, { initialMs: 5000, maxMs: 180_000, factor: 1.5 });
  const named = await loadArhatConfig(path, { ARHAT_DEVICE_NAME: "pi-7" });
  assert.equal(named.device.name, "pi-7");
});

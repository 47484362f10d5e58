import assert from "node:assert/strict";
import { KEEPALIVE_SHAPES, splitLinkWire } from "./link_wire_kinds.ts";
import type { WirePacket } from "./wire_capture.ts";

const pkt = (t: number, src: number, dst: number, payload: number, head: number[] = []) =>
  ({
    t,
    srcPort: src,
    dstPort: dst,
    bytes: 66 + payload,
    payload,
    head: new Uint8Array(head),
  }) as WirePacket;

Deno.test("splitLinkWire: keepalive exchanges, session messages by aranya's counts, directions", () => {
  const A = 8443;
  const D = 50000;
  const packets = [
    // A keepalive: aranya's empty message, the device's answer, the ACK.
    pkt(10, A, D, 28),
    pkt(10.001, D, A, 32),
    pkt(10.002, A, D, 0),
    // The device pushes its node status; aranya ACKs.
    pkt(100, D, A, 600),
    pkt(100.04, A, D, 0),
    // A late ACK alone after a silence.
    pkt(200, D, A, 0),
    // Another connection on another port: not this link.
    pkt(300, 9999, D, 500),
  ];
  const w = splitLinkWire({
    packets,
    aranyaPorts: [A],
    isKeepalive: KEEPALIVE_SHAPES.websocket,
    sessionKinds: { sent: {}, received: { MSG_NODE_STATUS: 1 } },
  });
  assert.equal(w.packets, 6);
  assert.deepEqual(w.exchanges, { keepalive: 1, MSG_NODE_STATUS: 1, tcp: 1 });
  assert.deepEqual(w.aranya_to_device, {
    keepalive: { bytes: 94 + 66, packets: 2 },
    MSG_NODE_STATUS: { bytes: 66, packets: 1 },
  });
  assert.deepEqual(w.device_to_aranya, {
    keepalive: { bytes: 98, packets: 1 },
    MSG_NODE_STATUS: { bytes: 666, packets: 1 },
    tcp: { bytes: 66, packets: 1 },
  });
});

Deno.test("splitLinkWire: aranya's broker leg is reversed; MQTT pings by their bytes", () => {
  const B = 1883;
  const ARANYA = 40000;
  const DEVICE = 40001;
  const packets = [
    pkt(1, ARANYA, B, 2, [0xc0, 0x00]),
    pkt(1.001, B, ARANYA, 2, [0xd0, 0x00]),
    pkt(5, DEVICE, B, 2, [0xc0, 0x00]),
    pkt(5.001, B, DEVICE, 2, [0xd0, 0x00]),
    // A sealed publish from aranya that aranya did not count: unexplained.
    pkt(9, ARANYA, B, 80, [0x32]),
  ];
  const none = { sent: {}, received: {} };
  const leg = splitLinkWire({
    packets,
    aranyaPorts: [B],
    devicePorts: [ARANYA],
    reversed: true,
    isKeepalive: KEEPALIVE_SHAPES.mqtt,
    sessionKinds: none,
  });
  assert.deepEqual(leg.exchanges, { keepalive: 1, unexplained: 1 });
  assert.deepEqual(leg.aranya_to_device, {
    keepalive: { bytes: 68, packets: 1 },
    unexplained: { bytes: 146, packets: 1 },
  });
  assert.deepEqual(leg.device_to_aranya, { keepalive: { bytes: 68, packets: 1 } });
  const device = splitLinkWire({
    packets,
    aranyaPorts: [B],
    devicePorts: [DEVICE],
    isKeepalive: KEEPALIVE_SHAPES.mqtt,
    sessionKinds: none,
  });
  assert.deepEqual(device.device_to_aranya, { keepalive: { bytes: 68, packets: 1 } });
  assert.deepEqual(device.aranya_to_device, { keepalive: { bytes: 68, packets: 1 } });
});

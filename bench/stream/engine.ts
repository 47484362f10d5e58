/**
 * The direct anchors: the container engine's own exec API (Docker-compatible,
 * on the Podman socket), without kubectl, the API server, aranya or arhat's
 * link. `POST /containers/{id}/exec`, then `/exec/{id}/start` hijacked (the
 * same hijack arhat's runtime uses); output demultiplexed (no tty).
 */
import { FrameDemuxer } from "@aranya/arhat/runtime/docker/demux";
import { hijack } from "@aranya/arhat/runtime/docker/hijack";
import type { EngineClient } from "@aranya/e2e/services/engine_client";
import type { EchoSession } from "./echo.ts";

/** The engine API version the e2e client speaks (dockerd 20.10 and Podman 4). */
const API = "v1.41";

/** An exec session with stdin attached; stdout demultiplexed, stderr dropped. */
export async function engineExec(
  engine: EngineClient,
  containerId: string,
  cmd: string[],
): Promise<EchoSession> {
  const created = await engine.call("POST", `/containers/${containerId}/exec`, {
    json: { Cmd: cmd, Tty: false, AttachStdin: true, AttachStdout: true, AttachStderr: true },
  }) as { Id: string };
  const conn = await hijack({
    socket: engine.socket,
    method: "POST",
    path: `/${API}/exec/${created.Id}/start`,
    body: { Detach: false, Tty: false },
    what: `bench exec "${cmd.join(" ")}" in "${containerId.slice(0, 12)}"`,
  });
  const demux = new FrameDemuxer();
  const stdout = conn.output.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        for (const c of demux.push(chunk)) if (c.stream === "stdout") ctl.enqueue(c.data);
      },
    }),
  );
  return {
    stdout,
    write: (data) => conn.write(data),
    close: () => {
      conn.close();
      return Promise.resolve();
    },
  };
}

/** Finds "\r\n\r\n" in `buf`; -1 when absent. */
export function headEnd(buf: Uint8Array): number {
  for (let i = 0; i + 3 < buf.length; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/**
 * GETs `path` from 127.0.0.1:`port` inside the pod of infra container
 * `infraId` through an engine exec of `nc` (what arhat runs for a
 * port-forward, here without anything between this process and the engine).
 * Resolves with the body's byte count and the ms from the exec's creation to
 * its last byte.
 */
export async function engineHttpGet(
  engine: EngineClient,
  infraId: string,
  port: number,
  path: string,
): Promise<{ bytes: number; ms: number; status: number }> {
  const t0 = performance.now();
  const s = await engineExec(engine, infraId, ["nc", "127.0.0.1", String(port)]);
  try {
    await s.write(new TextEncoder().encode(`GET ${path} HTTP/1.0\r\nHost: localhost\r\n\r\n`));
    let head = new Uint8Array();
    let parsed: { status: number; length: number } | undefined;
    let body = 0;
    for await (const chunk of s.stdout) {
      if (!parsed) {
        const joined = new Uint8Array(head.length + chunk.length);
        joined.set(head);
        joined.set(chunk, head.length);
        head = joined;
        const end = headEnd(head);
        if (end < 0) continue;
        const text = new TextDecoder().decode(head.subarray(0, end));
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
        const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? NaN);
        parsed = { status, length };
        body = head.length - end - 4;
      } else {
        body += chunk.length;
      }
      if (parsed && Number.isFinite(parsed.length) && body >= parsed.length) break;
    }
    const ms = performance.now() - t0;
    if (!parsed) throw new Error(`No HTTP response from 127.0.0.1:${port}${path} in the pod`);
    return { bytes: body, ms, status: parsed.status };
  } finally {
    await s.close();
  }
}

/**
 * Downloads `path` from 127.0.0.1:`port` inside the container over the pod's
 * own loopback (`wget | wc -c`, nothing leaves the pod), timed inside by
 * /proc/uptime (10 ms resolution): the server's ceiling, for scale.
 */
export async function inPodHttpGet(
  engine: EngineClient,
  containerId: string,
  port: number,
  path: string,
): Promise<{ bytes: number; ms: number; status: number }> {
  const script = "read s _ < /proc/uptime; " +
    `n=$(wget -q -O - http://127.0.0.1:${port}${path} | wc -c); ` +
    'read e _ < /proc/uptime; echo "$n $s $e"';
  const session = await engineExec(engine, containerId, ["sh", "-c", script]);
  let text = "";
  const dec = new TextDecoder();
  try {
    for await (const c of session.stdout) text += dec.decode(c, { stream: true });
  } finally {
    await session.close();
  }
  const m = /^(\d+) ([\d.]+) ([\d.]+)$/m.exec(text);
  if (!m) throw new Error(`In-pod download printed ${JSON.stringify(text.slice(0, 200))}`);
  const ms = Math.max(10, (Number(m[3]) - Number(m[2])) * 1000);
  return { bytes: Number(m[1]), ms, status: 200 };
}

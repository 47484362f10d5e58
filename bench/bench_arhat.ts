/**
 * The real arhat for a bench: its process under its permission set, with a
 * link server playing aranya (FakeAranya), on one engine; and arhat's RSS as
 * `ps` reports it.
 */
import { arhatConfig, type ArhatProc, FakeAranya, spawnArhat } from "@aranya/e2e/arhat_harness";
import { ROOT } from "@aranya/e2e/paths";

/** A running arhat and its aranya stand-in. */
export interface BenchArhat {
  aranya: FakeAranya;
  arhat: ArhatProc;
  /** Its folder under .cache/arhat-e2e (config, state). */
  dir: string;
}

/** Starts arhat on the engine at `socket`, connected to a fresh FakeAranya. */
export async function startBenchArhat(opts: {
  name: string;
  socket: string;
  image: string;
  ca: string;
}): Promise<BenchArhat> {
  const dir = `${ROOT}/.cache/arhat-e2e/${opts.name}-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/ca.crt`, opts.ca);
  const aranya = new FakeAranya();
  await aranya.start();
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    arhatConfig({
      socket: opts.socket,
      image: opts.image,
      stateDir: `${dir}/state`,
      port: aranya.port,
      ca: `${dir}/ca.crt`,
      allowHost: false,
    }),
  );
  return { aranya, arhat: spawnArhat(`${dir}/config.yaml`), dir };
}

/** Resident set size of a process, MB (one decimal). */
export async function rssMB(pid: number): Promise<number> {
  const out = await new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", String(pid)],
    stdout: "piped",
  }).output();
  return +(Number(new TextDecoder().decode(out.stdout).trim()) / 1024).toFixed(1);
}

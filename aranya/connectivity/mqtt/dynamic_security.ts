/**
 * Per-device broker identity on mosquitto, through its dynamic security
 * plugin (`$CONTROL/dynamic-security/v1`): for every MQTT device aranya keeps
 *
 * - a broker client whose user name is the device ("<namespace>/<name>") and
 *   whose password is derived from the device's link key
 *   (`brokerPassword` in common/mqtt_seal.ts: the broker never learns the
 *   token or the key);
 * - a role `aranya-device.<namespace>.<name>.<hash of its topics>` that allows
 *   exactly: subscribe to and receive `{ns}/cmd`, publish `{ns}/msg` and
 *   `{ns}/status`. Everything else falls to the broker's default ACL access
 *   (deny, as `mosquitto_ctrl dynsec init` sets it up).
 *
 * Deleting the device deletes its client (mosquitto disconnects it) and its
 * roles. A changed message namespace gets a new role; the old one is removed.
 * The client's `textdescription` holds a fingerprint of its password
 * ({@link passwordFingerprint}), so that {@link ensureDeviceAccount} can
 * compare before it changes anything: every change of an account makes
 * mosquitto disconnect the device, without its will.
 *
 * aranya's own broker account must be allowed to use the plugin's control
 * topic and every device topic (docs/security.md says how). Requests go over
 * the link server's one broker connection; each answer is matched by a
 * correlation id.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import type { MqttClient } from "mqtt";
import { errorMessage, UnavailableError } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { mqttTopics, publishQos1 } from "@aranya/common/mqtt_protocol";

/** The plugin's request topic. */
export const DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1";
/** Where the plugin answers. */
export const DYNSEC_RESPONSE_TOPIC = `${DYNSEC_TOPIC}/response`;
/** Prefix of the roles aranya manages (and only those are ever removed). */
export const ROLE_PREFIX = "aranya-device.";

/** One dynamic-security command (see mosquitto_ctrl_dynsec(1)). */
export type DynsecCommand = { command: string; [field: string]: unknown };

/** The plugin's answer to one command. */
export interface DynsecResult {
  command: string;
  error?: string;
  data?: Record<string, unknown>;
  correlationData?: string;
}

/** The role name of `device` for topics under `ns`. */
export function deviceRole(device: string, ns: string): string {
  const hash = createHash("sha256").update(ns).digest("hex").slice(0, 12);
  return `${ROLE_PREFIX}${device.replace("/", ".")}.${hash}`;
}

/** The ACLs of a device's role: its own three topics, nothing else. */
export function deviceAcls(ns: string): Record<string, unknown>[] {
  const t = mqttTopics(ns);
  const acl = (acltype: string, topic: string) => ({ acltype, topic, priority: 0, allow: true });
  return [
    acl("subscribeLiteral", t.cmd),
    acl("publishClientReceive", t.cmd),
    acl("publishClientSend", t.msg),
    acl("publishClientSend", t.status),
  ];
}

/** Sends dynamic-security commands and awaits their answers. */
export class DynsecClient {
  readonly #pending = new Map<string, (r: DynsecResult) => void>();
  readonly #log: Logger;

  constructor(readonly client: () => MqttClient | undefined, log?: Logger) {
    this.#log = log ?? nullLogger;
  }

  /** Feeds a message of {@link DYNSEC_RESPONSE_TOPIC} (the caller subscribes it). */
  onResponse(payload: Uint8Array): void {
    let body: { responses?: DynsecResult[] };
    try {
      body = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      return;
    }
    for (const r of body.responses ?? []) {
      const done = r.correlationData ? this.#pending.get(r.correlationData) : undefined;
      if (done) {
        this.#pending.delete(r.correlationData!);
        done(r);
      }
    }
  }

  /**
   * Sends `commands` in one request; resolves with their results in order.
   * Rejects with `UnavailableError` when the broker is not reachable or does
   * not answer within `timeoutMs`.
   */
  async run(commands: DynsecCommand[], timeoutMs = 10_000): Promise<DynsecResult[]> {
    const client = this.client();
    if (!client?.connected) throw new UnavailableError("Not connected to the MQTT broker");
    const ids = commands.map(() => crypto.randomUUID());
    const answers = ids.map((id) =>
      new Promise<DynsecResult>((resolve) => this.#pending.set(id, resolve))
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new UnavailableError(`The broker's dynamic security did not answer`)),
        timeoutMs,
      );
    });
    try {
      const body = { commands: commands.map((c, i) => ({ ...c, correlationData: ids[i] })) };
      await publishQos1(client, DYNSEC_TOPIC, Buffer.from(JSON.stringify(body)), timeoutMs);
      return await Promise.race([Promise.all(answers), timeout]);
    } catch (err) {
      this.#log.debug("dynamic security request failed", { error: errorMessage(err) });
      throw err instanceof UnavailableError
        ? err
        : new UnavailableError(`Dynamic security request failed: ${errorMessage(err)}`);
    } finally {
      clearTimeout(timer);
      for (const id of ids) this.#pending.delete(id);
    }
  }
}

/** True for answers that mean "already so" (the request is idempotent). */
function harmless(r: DynsecResult): boolean {
  return r.error === undefined || /already|not found/i.test(r.error);
}

/**
 * What {@link ensureDeviceAccount} did: created the account, `updated` it (a
 * changed password, a missing role, roles of an earlier message namespace:
 * mosquitto disconnects every client of the account for it, without their
 * wills), or left it `unchanged` (nothing sent that touches the account).
 */
export type AccountChange = "created" | "updated" | "unchanged";

/**
 * The fingerprint of a device's broker password that aranya keeps in the
 * broker client's `textdescription`: the plugin never returns a password, so
 * this is how aranya tells whether the account already has the right one. It
 * reveals nothing: the password is 256 bits derived from the link key.
 */
export function passwordFingerprint(password: string): string {
  return createHash("sha256")
    .update(`aranya.arhat.dev/mqtt/password-fingerprint\0${password}`)
    .digest("hex")
    .slice(0, 32);
}

/** The `textdescription` aranya gives a device's broker client. */
export function accountDescription(password: string): string {
  return `Managed by aranya; password fingerprint ${passwordFingerprint(password)}`;
}

/**
 * Brings the broker client and role of `device` to the state described in the
 * module doc, comparing first: it reads the client (`getClient`) and changes
 * only what differs, so calling it again and again (aranya does, on every
 * reconcile of the EdgeDevice) never disconnects a device whose account is
 * right. mosquitto 2.0 disconnects an account's clients on every
 * `setClientPassword`, `modifyClient`, `addClientRole` and `removeClientRole`,
 * even one that changes nothing, and answers an `addClientRole` for a role the
 * client has with "Internal error". Only a real change (a rotated token, a new
 * message namespace, an account made by hand or by an aranya that kept no
 * fingerprint) is sent, and it disconnects the device once. Throws
 * `UnavailableError` when the broker refuses.
 */
export async function ensureDeviceAccount(
  dynsec: DynsecClient,
  device: string,
  ns: string,
  password: string,
): Promise<AccountChange> {
  const role = deviceRole(device, ns);
  const description = accountDescription(password);
  const refused = (results: DynsecResult[]) => {
    const failed = results.filter((r) => !harmless(r));
    if (failed.length) {
      throw new UnavailableError(
        `The broker refused the account of device "${device}": ${
          failed.map((r) => `${r.command}: ${r.error}`).join("; ")
        }`,
      );
    }
  };
  // createRole leaves an existing role alone ("Role already exists").
  const [roleResult, got] = await dynsec.run([
    { command: "createRole", rolename: role, acls: deviceAcls(ns) },
    { command: "getClient", username: device },
  ]);
  refused([roleResult!]);
  let client = got!;
  if (client.error !== undefined && /not found/i.test(client.error)) {
    const [created] = await dynsec.run([{
      command: "createClient",
      username: device,
      password,
      textdescription: description,
      roles: [{ rolename: role }],
    }]);
    if (created!.error === undefined) return "created";
    refused([created!]);
    // Someone created it meanwhile: compare with what is there.
    client = (await dynsec.run([{ command: "getClient", username: device }]))[0]!;
  }
  if (client.error !== undefined) refused([client]);
  const current = clientOf(client);
  const commands: DynsecCommand[] = [];
  if (current?.textdescription !== description) {
    commands.push({
      command: "modifyClient",
      username: device,
      password,
      textdescription: description,
    });
  }
  const roles = rolesOf(client);
  if (!roles.includes(role)) {
    commands.push({ command: "addClientRole", username: device, rolename: role });
  }
  // Roles of earlier message namespaces go.
  for (const r of roles.filter((r) => r.startsWith(ROLE_PREFIX) && r !== role)) {
    commands.push(
      { command: "removeClientRole", username: device, rolename: r },
      { command: "deleteRole", rolename: r },
    );
  }
  if (!commands.length) return "unchanged";
  refused(await dynsec.run(commands));
  return "updated";
}

/** Deletes the broker client of `device` (disconnecting it) and its roles. */
export async function removeDeviceAccount(dynsec: DynsecClient, device: string): Promise<void> {
  const [client] = await dynsec.run([{ command: "getClient", username: device }]);
  const roles = rolesOf(client).filter((r) => r.startsWith(ROLE_PREFIX));
  await dynsec.run([
    { command: "deleteClient", username: device },
    ...roles.map((r) => ({ command: "deleteRole", rolename: r })),
  ]);
}

/** The client of a `getClient` answer. */
interface DynsecClientData {
  textdescription?: string;
  roles?: { rolename?: string }[];
}

function clientOf(r: DynsecResult | undefined): DynsecClientData | undefined {
  return (r?.data as { client?: DynsecClientData } | undefined)?.client;
}

function rolesOf(r: DynsecResult | undefined): string[] {
  return (clientOf(r)?.roles ?? []).map((x) => x.rolename ?? "").filter((x) => x !== "");
}

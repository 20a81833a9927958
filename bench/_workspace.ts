/**
 * The bench's scratch space: a temporary folder with the device registry (written
 * directly, one shared scrypt hash for every device), a CA and relay certificate made
 * with openssl, and one data folder per relay.
 *
 * @module
 */

import { join } from "node:path";
import { makeVerifier } from "../relay/registry/verifier.ts";
import { type Registration, REGISTRY_FILE, REGISTRY_VERSION } from "../relay/registry/registry.ts";
import { FILE_ATTRIBUTE } from "../shared/protocol/constants.ts";
import { BENCH_PASSWORD, idleDeviceId } from "./_load_types.ts";
import { makeCertificates, type TlsFiles } from "../scripts/certs.ts";

/** Device type of every bench device. */
const TYPE = "USER";

/** Fixed device IDs used by the scenarios. */
export const DEVICES = [
  "tx",
  "rx",
  "req",
  "echo",
  "peer-a",
  "peer-b",
  "mesh-watch",
  "mesh-obs",
] as const;

/** A device that receives files (type FAX, attribute FILE TX/RX): a real `tsunagi run`. */
export const FILE_DEVICE = "fax";

/** The fixed devices, `fax` and `idleDevices` idle devices (`idle-00000` ...). */
export function benchDeviceIds(idleDevices: number): string[] {
  return [
    ...DEVICES,
    FILE_DEVICE,
    ...Array.from({ length: idleDevices }, (_, i) => idleDeviceId(i)),
  ];
}

/** A temporary folder and what the scenarios need from it. */
export class Workspace implements AsyncDisposable {
  /** Root of the scratch folder. */
  readonly root: string;
  readonly #hash: string;
  readonly #registryText: string;
  #relayCount = 0;
  #tls: TlsFiles | undefined;

  private constructor(root: string, hash: string, ids: string[]) {
    this.root = root;
    this.#hash = hash;
    this.#registryText = this.registry(ids);
  }

  /** Creates the folder and the registry text for `idleDevices` idle devices. */
  static async create(idleDevices: number): Promise<Workspace> {
    const root = await Deno.makeTempDir({ prefix: "tsunagi-bench-" });
    // One verifier, shared by every device: each agent process derives its key once, and
    // registering 5,000 devices one by one through the CLI would derive 5,000 times.
    const hash = await makeVerifier(BENCH_PASSWORD);
    return new Workspace(root, hash, benchDeviceIds(idleDevices));
  }

  /**
   * The text of a registry file registering `ids` (all with the bench password, one
   * shared verifier; `fax` as a FAX with the file attribute), as the relay writes it.
   */
  registry(ids: readonly string[]): string {
    const now = Date.now();
    const devices: Registration[] = [...ids].sort().map((id) => ({
      id,
      type: id === FILE_DEVICE ? "FAX" : TYPE,
      attributes: id === FILE_DEVICE ? [FILE_ATTRIBUTE] : [],
      passwordHash: this.#hash,
      updatedAt: now,
    }));
    return JSON.stringify({ version: REGISTRY_VERSION, devices }) + "\n";
  }

  /**
   * A fresh data folder for one relay, holding the workspace's registry, or `registry`
   * (a text from {@link Workspace.registry}) when given.
   */
  async relayDataDir(label: string, registry = this.#registryText): Promise<string> {
    const dir = join(this.root, `relay-${++this.#relayCount}-${label}`);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(join(dir, REGISTRY_FILE), registry, { mode: 0o600 });
    return dir;
  }

  /** A CA and a certificate for 127.0.0.1 signed by it (made once, with openssl). */
  async tls(): Promise<TlsFiles> {
    this.#tls ??= await makeCertificates(join(this.root, "tls"));
    return this.#tls;
  }

  /** Writes a file into the workspace; returns its path. */
  async file(name: string, text: string): Promise<string> {
    const path = join(this.root, name);
    await Deno.writeTextFile(path, text, { mode: 0o600 });
    return path;
  }

  /** A file holding every bench device's password (for `tsunagi run` and `send`). */
  passwordFile(): Promise<string> {
    return this.file("password", BENCH_PASSWORD + "\n");
  }

  /** Removes the folder. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}

export type { TlsFiles };

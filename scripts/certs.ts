/**
 * `deno task certs [DIR] [--host IP_OR_NAME]`: makes a private CA and a relay
 * certificate signed by it, with openssl, for trying TLS (and for the tests and the
 * bench). Writes `ca.pem`, `ca.key`, `relay.pem`, `relay.key` into DIR (default ./tls).
 *
 * The relay takes `--tls-cert relay.pem --tls-key relay.key`; agents and other relays
 * take `--tls-ca ca.pem`.
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";

/** PEM files for a TLS relay. */
export interface TlsFiles {
  /** CA certificate agents and relays trust. */
  caFile: string;
  /** Relay certificate. */
  certFile: string;
  /** Relay private key. */
  keyFile: string;
}

async function openssl(cwd: string, args: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command("openssl", {
    args,
    cwd,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  if (code !== 0) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(stderr).trim()}`);
  }
}

/** Makes a P-256 CA and a relay certificate for `host` (default 127.0.0.1) in `dir`. */
export async function makeCertificates(dir: string, host = "127.0.0.1"): Promise<TlsFiles> {
  await Deno.mkdir(dir, { recursive: true });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const days = ["-days", "825"];
  await openssl(dir, [
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    ...days,
    "-subj",
    "/CN=tsunagi private CA",
  ]);
  await openssl(dir, [
    "req",
    ...ec,
    "-keyout",
    "relay.key",
    "-out",
    "relay.csr",
    "-subj",
    `/CN=${host}`,
  ]);
  const san = /^[\d.]+$|:/.test(host) ? `IP:${host}` : `DNS:${host}`;
  await Deno.writeTextFile(join(dir, "ext.cnf"), `subjectAltName=${san}\n`);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    "relay.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "relay.pem",
    ...days,
    "-extfile",
    "ext.cnf",
  ]);
  return {
    caFile: join(dir, "ca.pem"),
    certFile: join(dir, "relay.pem"),
    keyFile: join(dir, "relay.key"),
  };
}

const CERTS_HELP = `Usage: deno task certs [DIR] [--host IP_OR_NAME]

Makes a private CA and a relay certificate signed by it, with openssl, for trying TLS.
Writes into DIR (default ./tls):
  ca.pem, ca.key        the CA; give ca.pem to agents and other relays (--tls-ca)
  relay.pem, relay.key  the relay's certificate and key (--tls-cert, --tls-key)
Existing files in DIR are overwritten.

  --host IP_OR_NAME     the address agents dial the relay at, written into the
                        certificate (default 127.0.0.1); a certificate for one name
                        is refused when the relay is dialled by another
  -h, --help            show this help

Example:
  deno task certs ./tls --host relay.example.com
  deno task relay --tls-cert tls/relay.pem --tls-key tls/relay.key
  deno task agent list --tls-ca tls/ca.pem --relay relay.example.com:7800 ...

For production, use a certificate from your own or a public CA instead.
Needs openssl on PATH. Exit codes: 0 done, 1 openssl failed.`;

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { host: { type: "string" }, help: { type: "boolean", short: "h" } },
    allowPositionals: true,
  });
  // Printed before anything runs: --help must not make certificates.
  if (values.help) {
    console.log(CERTS_HELP);
    Deno.exit(0);
  }
  const files = await makeCertificates(positionals[0] ?? "tls", values.host);
  console.log(
    `relay: --tls-cert ${files.certFile} --tls-key ${files.keyFile}\n` +
      `agents and other relays: --tls-ca ${files.caFile}`,
  );
}

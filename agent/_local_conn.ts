/**
 * The local side of a tunnel, as {@link pipeSession} in tunnel.ts uses it.
 *
 * @module
 */

/** A local byte stream a session is piped to. `Deno.TcpConn` fits. */
export interface LocalConn {
  /** Reads into `p`; the byte count, or null at end of stream (the local FIN). */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; `p` may be reused once the promise settles. */
  write(p: Uint8Array): Promise<number>;
  /** Sends FIN; reading goes on. */
  closeWrite(): Promise<void> | void;
  /** Closes both directions. */
  close(): void;
  /** Closes abortively (RST) where the socket allows it; else like `close`. */
  reset?(): void;
}

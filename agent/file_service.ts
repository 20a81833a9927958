/**
 * The `file` service as a {@link ServiceHandler}: receives files into an inbox
 * (transfer.ts has the format).
 *
 * @module
 */

import type { Logger } from "../shared/log.ts";
import type { ServiceHandler } from "./supervisor.ts";
import { FileTooLargeError, receiveFiles } from "./transfer.ts";

/** Default largest file `run` accepts: 4 GiB. */
export const DEFAULT_MAX_FILE_SIZE = 4 * 1024 ** 3;

/** Options for {@link fileService}. */
export interface FileServiceOptions {
  /** Folder for received files. */
  inbox: string;
  /** Largest file received, bytes (default {@link DEFAULT_MAX_FILE_SIZE}; 0 = no limit). */
  maxFileSize?: number;
  /** Where "receiving file" / "file received" / "file refused" lines go. */
  logger: Logger;
}

/**
 * A handler that accepts every request and receives files into `inbox`. A file over the
 * limit is refused (the sender is told) and fails the session.
 *
 * @example
 * ```ts ignore
 * superviseDevice({ ...login, services: { file: fileService({ inbox: "./inbox", logger }) } });
 * ```
 */
export function fileService(options: FileServiceOptions): ServiceHandler {
  const maxFileSize = options.maxFileSize ?? DEFAULT_MAX_FILE_SIZE;
  const { logger } = options;
  return async (request) => {
    const from = request.from;
    const session = await request.accept();
    try {
      await receiveFiles(session, options.inbox, {
        maxFileSize: maxFileSize > 0 ? maxFileSize : undefined,
        onFileStart: (name, size) => logger.info("receiving file", { from, name, bytes: size }),
        onFile: (f) =>
          logger.info("file received", {
            from,
            name: f.announced,
            path: f.path,
            bytes: f.size,
            sha256: f.sha256,
          }),
      });
    } catch (e) {
      if (e instanceof FileTooLargeError) {
        logger.warn("file refused", { from, session: request.id, reason: e.message });
      }
      throw e;
    }
  };
}

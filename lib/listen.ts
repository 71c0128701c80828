import type { Server } from "node:net";
import { OperatorError } from "./exit.ts";

/**
 * `server.listen`, with the failures an operator causes told in their terms: `setting` names the variable
 * that chose the port, so a second process on a host says which one to change instead of dying with
 * EADDRINUSE and a stack.
 */
export async function listen(server: Server, port: number, host: string, setting: string): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") {
      throw new OperatorError(
        `${setting}=${port} is already in use on ${host} (another tally process on this host?): give each process its own ${setting}, or ${setting}=0 for any free port`,
      );
    }
    if (code === "EACCES") {
      throw new OperatorError(
        `${setting}=${port} on ${host} needs privileges this process lacks: use a port above 1023`,
      );
    }
    if (code === "EADDRNOTAVAIL") {
      throw new OperatorError(
        `HOST=${host} is not an address of this machine: ${setting}=${port} cannot be bound there`,
      );
    }
    throw error;
  }
}

import { readdirSync, readFileSync } from "node:fs";

// What Linux' /proc says of a process and its descendants (an API node's primary and its workers).

const CLOCK_TICKS_PER_SECOND = 100;

/** `root` and every process descended from it. */
function treeOf(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      parentOf.set(Number(entry), Number(statFields(Number(entry))[1]));
    } catch {
      // Exited while we looked.
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parentOf) if (ppid === tree[i]) tree.push(pid);
  }
  return tree;
}

/** The fields of /proc/<pid>/stat after the command name (which may hold spaces): state, ppid, … */
function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** Resident set size in MB of `root` and each of its descendants, keyed "pid (role)". */
export function rssOfTree(root: number): Record<string, number> {
  const rss: Record<string, number> = {};
  for (const pid of treeOf(root)) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
      const role = pid === root ? "primary (migrations, syncer)" : "api worker";
      if (Number.isFinite(kb)) rss[`${role}, pid ${pid}`] = Math.round(kb / 1024);
    } catch {
      // Exited while we looked.
    }
  }
  return rss;
}

/** CPU time, user and system, that `root` and its descendants have used so far, in seconds. */
export function cpuSecondsOfTree(root: number): number {
  let ticks = 0;
  for (const pid of treeOf(root)) {
    try {
      const fields = statFields(pid);
      // utime and stime are the 14th and 15th fields of the line, the 12th and 13th after the name.
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // Exited while we looked.
    }
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

import { readdirSync, readFileSync } from "node:fs";

/** Resident set size in MB of `root` and each of its descendants, keyed "pid (role)". Linux /proc only. */
export function rssOfTree(root: number): Record<string, number> {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // Exited while we looked.
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parentOf) if (ppid === tree[i]) tree.push(pid);
  }
  const rss: Record<string, number> = {};
  for (const pid of tree) {
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

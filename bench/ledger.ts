import type pg from "pg";

// What the ledger (sync_batches) says about staleness over a window of a benchmark run.

/**
 * The worst staleness of a window is the moment just before one of its commits, commit time less the swap
 * time of the shard's batch before (the ledger has both), or its end, if no commit came for a while:
 * exact, where sampling would miss up to a sampling interval. Where a cycle between two batches was idle it
 * overstates, never understates.
 */
export async function worstStalenessBeforeCommits(pool: pg.Pool, from: Date, until: Date): Promise<number> {
  const { rows } = await pool.query<{ s: number | null }>(
    `SELECT greatest(
              (SELECT max(extract(epoch FROM committed_at - previous_swap))
                 FROM (SELECT committed_at, lag(swapped_at) OVER (PARTITION BY shard ORDER BY seq) AS previous_swap
                         FROM sync_batches) AS batches
                WHERE committed_at >= $1 AND committed_at < $2),
              (SELECT extract(epoch FROM $2 - min(last_swap))
                 FROM (SELECT max(swapped_at) AS last_swap FROM sync_batches WHERE committed_at < $2
                        GROUP BY shard) AS shards)
            )::float8 AS s`,
    [from, until],
  );
  return rows[0]?.s ?? Number.NaN;
}

/** The longest time from a batch's swap to its commit, of the batches committed in the window. */
export async function longestSwapToCommit(pool: pg.Pool, from: Date, until: Date): Promise<number> {
  const { rows } = await pool.query<{ s: number | null }>(
    `SELECT max(extract(epoch FROM committed_at - swapped_at))::float8 AS s
       FROM sync_batches WHERE committed_at >= $1 AND committed_at < $2`,
    [from, until],
  );
  return rows[0]?.s ?? Number.NaN;
}

-- The totals. The syncer is the only writer; the API only reads.
CREATE TABLE counters (
  key        text PRIMARY KEY,
  value      bigint NOT NULL,
  updated_at timestamptz NOT NULL
);

-- The batch ledger. A batch id lands here in the same transaction that applies the
-- batch, so a batch whose id is already here was applied and is never applied again:
-- this, not the leader lease, is what keeps two syncers from double-counting.
CREATE TABLE sync_batches (
  batch_id     uuid PRIMARY KEY,
  shard        integer NOT NULL,
  -- Per-shard swap order, used by reads to tell which pending deltas Postgres already holds.
  seq          bigint NOT NULL,
  swapped_at   timestamptz NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT now(),
  key_count    integer NOT NULL,
  delta_sum    numeric NOT NULL
);
CREATE INDEX sync_batches_committed_at ON sync_batches (committed_at);

-- Per shard: every increment accepted before synced_through is in counters.
-- Staleness is now() - min(synced_through).
CREATE TABLE sync_state (
  shard          integer PRIMARY KEY,
  synced_through timestamptz NOT NULL,
  last_seq       bigint NOT NULL
);

-- Deltas the syncer could not apply (a total that would leave bigint). Nothing is
-- dropped: the delta waits here, with its batch, for an operator.
CREATE TABLE quarantined_deltas (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  batch_id       uuid NOT NULL,
  key            text NOT NULL,
  delta          bigint NOT NULL,
  reason         text NOT NULL,
  quarantined_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantined_deltas_key ON quarantined_deltas (key);

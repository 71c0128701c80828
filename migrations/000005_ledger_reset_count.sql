-- A batch may carry resets (DELETE /counters/{key}) besides deltas. The ledger records how many, so that a
-- leftover batch found in Redis again is compared whole with what was applied (see checkLeftover).
ALTER TABLE sync_batches ADD COLUMN reset_count integer NOT NULL DEFAULT 0;

-- A key Postgres cannot index in counters (a btree entry holds at most 2,704 bytes) is set aside in
-- quarantined_deltas, so no btree may cover that column either: a hash index stores only the key's hash,
-- and still finds a key's set-aside deltas by equality.
DROP INDEX quarantined_deltas_key;
CREATE INDEX quarantined_deltas_key ON quarantined_deltas USING hash (key);

-- Listing counters in key order pages through the primary key's btree with a range on key. The order must be
-- one a client can compute and a reader can merge with keys only Redis holds: the bytes of UTF-8, which is
-- Unicode code point order. A database created with a linguistic collation (en_US.UTF-8, ICU) orders keys
-- otherwise and would need a second index; the "C" collation is that order, and the fastest to compare.
-- Rewrites the table and its index: on a large table, run it in a quiet moment (see docs/operations.md).
ALTER TABLE counters ALTER COLUMN key TYPE text COLLATE "C";

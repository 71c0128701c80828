--[[
  Applies increments carrying an Idempotency-Key at most once: a POST /increment (one increment), or one
  shard's part of a POST /increments (each part has its own record, in its shard). The record and the
  increments are one atomic step, so a retry is recognised even when the first attempt's reply was lost (a
  client timeout after Redis had applied it; see includes/idempotency-record.lua). Every key shares the
  shard's hash tag, so this also holds on Redis Cluster. The increments are applied whole or not at all, as
  in increment-batch-1.lua.

  KEYS[1]  dirty hash of the shard
  KEYS[2]  idempotency record (per client, Idempotency-Key and, for a batch, shard)
  KEYS[3]  index of the shard's idempotency records (sorted set)

  ARGV[1]  fingerprint of the request body
  ARGV[2]  record time to live, seconds
  ARGV[3]  now, ms since the epoch
  ARGV[4]  most records the shard may hold
  ARGV[5]  record digest (the index member)
  ARGV[6]  the increments packed as a JSON array ["key", "value", …] (see includes/apply-increments.lua)

  Returns  {"applied"}: the increments were applied now;
           {"replayed"}: this key already applied the same body (only the record's expiry is set again, to
           what it was);
           {"reused"}: this key was used with a different body (nothing done);
           {"full"}: the shard holds as many records as it may (nothing done);
           {"refused", position from 1, reason}: as increment-batch-1.lua (nothing done, nothing recorded).
]]
--- @include "apply-increments"
--- @include "idempotency-record"

local answer = answerOfRecord(KEYS[2], ARGV[1])
if answer then
  return {answer}
end
if recordsFull(KEYS[3], ARGV[3], tonumber(ARGV[4])) then
  return {'full'}
end

-- The first write that needs memory, so a full Redis refuses it with nothing done (unless the prune above
-- freed memory first: Redis checks memory only before a script's first write).
local increments = unpackIncrements(ARGV[6])
local refusal = applyIncrements(KEYS[1], increments, 1, #increments / 2)
if refusal then
  return {'refused', refusal[1], refusal[2]}
end
keepRecord(KEYS[2], ARGV[1], ARGV[2], KEYS[3], ARGV[3], ARGV[5])
return {'applied'}

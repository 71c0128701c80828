--[[
  Applies increments carrying an Idempotency-Key at most once: a POST /increment (one increment), or one
  shard's part of a POST /increments (each part has its own record, in its shard). The record and the
  increments are one atomic step, so a retry is recognised even when the first attempt's reply was lost (a
  client timeout after Redis had applied it). Every key shares the shard's hash tag, so this also holds on
  Redis Cluster. The increments are applied whole or not at all, as in increment-batch-1.lua.
  The shard's index of records (member: record digest, score: when it expires) bounds how many there are;
  expired members are dropped here only at the bound, and by the syncer every cycle.

  KEYS[1]  dirty hash of the shard
  KEYS[2]  idempotency record (per client, Idempotency-Key and, for a batch, shard)
  KEYS[3]  index of the shard's idempotency records (sorted set)

  ARGV[1]  fingerprint of the request body
  ARGV[2]  record time to live, seconds
  ARGV[3]  now, ms since the epoch
  ARGV[4]  most records the shard may hold
  ARGV[5]  record digest (the index member)
  then     counter key and value (integer) pairs: key1, value1, key2, value2, ...

  Returns  {"applied"}: the increments were applied now;
           {"replayed"}: this key already applied the same body (only the record's expiry is set again, to
           what it was);
           {"reused"}: this key was used with a different body (nothing done);
           {"full"}: the shard holds as many records as it may (nothing done);
           {"refused", position from 1, reason}: as increment-batch-1.lua (nothing done, nothing recorded).
]]
--- @include "apply-increments"

local recorded = redis.call('GET', KEYS[2])
if recorded then
  if recorded ~= ARGV[1] then
    return {'reused'}
  end
  -- A replay is answered as the first request was. Setting the record's expiry again to what it is makes
  -- this script a write, so that a WAIT after it covers the first request's write too (WAIT counts the
  -- replicas holding this connection's writes, and the first request may have come on another).
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  else
    redis.call('SET', KEYS[2], recorded, 'KEEPTTL')
  end
  return {'replayed'}
end
local limit = tonumber(ARGV[4])
if redis.call('ZCARD', KEYS[3]) >= limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
  if redis.call('ZCARD', KEYS[3]) >= limit then
    return {'full'}
  end
end

-- The first write that needs memory, so a full Redis refuses it with nothing done (unless the prune above
-- freed memory first: Redis checks memory only before a script's first write).
local refusal = applyIncrements(KEYS[1], ARGV, 6, (#ARGV - 5) / 2)
if refusal then
  return {'refused', refusal[1], refusal[2]}
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[2]) * 1000, ARGV[5])
return {'applied'}

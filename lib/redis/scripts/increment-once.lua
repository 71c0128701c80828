--[[
  Applies increments carrying an Idempotency-Key at most once: a POST /increment (one increment), or one
  shard's part of a POST /increments (each part has its own record, in its shard). The record and the
  increments are one atomic step, so a retry is recognised even when the first attempt's reply was lost (a
  client timeout after Redis had applied it). Every key shares the shard's hash tag, so this also holds on
  Redis Cluster. The increments are applied whole or not at all, as in increment-batch.lua.
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

  Returns  1 when the increments were applied now, 0 when this key already applied the same body (a
           replay: only the record's expiry is set again, to what it was), -1 when this key was used with a different body (nothing done), -2 when
           the shard holds as many records as it may (nothing done), or "<position>:<error>" when HINCRBY
           refused the increment at that position (from 1; nothing done, nothing recorded).
]]
local recorded = redis.call('GET', KEYS[2])
if recorded then
  if recorded == ARGV[1] then
    -- A replay is answered as the first request was: applied. Setting the record's expiry again to what it
    -- is makes this script a write, so that a WAIT after it covers the first request's write too (WAIT
    -- counts the replicas holding this connection's writes, and the first request may have come on another).
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl > 0 then
      redis.call('PEXPIRE', KEYS[2], ttl)
    else
      redis.call('SET', KEYS[2], recorded, 'KEEPTTL')
    end
    return 0
  end
  return -1
end
local limit = tonumber(ARGV[4])
if redis.call('ZCARD', KEYS[3]) >= limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
  if redis.call('ZCARD', KEYS[3]) >= limit then
    return -2
  end
end

-- As text: a Lua number would print a large value in exponent notation, which HINCRBY refuses.
local function negated(value)
  if string.sub(value, 1, 1) == '-' then
    return string.sub(value, 2)
  end
  return '-' .. value
end

-- The first write that needs memory, so a full Redis refuses it with nothing done (unless the prune above
-- freed memory first: Redis checks memory only before a script's first write).
for i = 6, #ARGV, 2 do
  local reply = redis.pcall('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  if type(reply) == 'table' and reply.err then
    for j = i - 2, 6, -2 do
      -- A pending 0 counts nothing: drop the field rather than leave one the refused part made.
      if ARGV[j + 1] ~= '0' and redis.call('HINCRBY', KEYS[1], ARGV[j], negated(ARGV[j + 1])) == 0 then
        redis.call('HDEL', KEYS[1], ARGV[j])
      end
    end
    return ((i - 4) / 2) .. ':' .. reply.err
  end
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[2]) * 1000, ARGV[5])
return 1

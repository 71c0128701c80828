--[[
  The Idempotency-Key record of one write, for the scripts that take one. The record and the write are one
  atomic step, so a retry is recognised even when the first attempt's reply was lost. The shard's index of
  records (member: record digest, score: when it expires) bounds how many there are; expired members are
  dropped here only at the bound, and by the syncer every cycle.

  answerOfRecord(record, fingerprint): nil when there is no record; else the answer to a request that has
    one: "reused" when it holds another request's fingerprint, "replayed" when it holds this one's. A replay
    sets the record's expiry again to what it is: a write, so that a WAIT after the script covers the first
    request's write too (WAIT counts the replicas holding this connection's writes, and the first request
    may have come on another).
  recordsFull(index, now, limit): true when the shard holds as many records as it may.
  keepRecord(record, fingerprint, ttl, index, now, digest): records the write, after it was done.
]]
local function answerOfRecord(record, fingerprint)
  local recorded = redis.call('GET', record)
  if not recorded then
    return nil
  end
  if recorded ~= fingerprint then
    return 'reused'
  end
  local ttl = redis.call('PTTL', record)
  if ttl > 0 then
    redis.call('PEXPIRE', record, ttl)
  else
    redis.call('SET', record, recorded, 'KEEPTTL')
  end
  return 'replayed'
end

local function recordsFull(index, now, limit)
  if redis.call('ZCARD', index) < limit then
    return false
  end
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  return redis.call('ZCARD', index) >= limit
end

local function keepRecord(record, fingerprint, ttl, index, now, digest)
  redis.call('SET', record, fingerprint, 'EX', ttl)
  redis.call('ZADD', index, tonumber(now) + tonumber(ttl) * 1000, digest)
end

--[[
  Applies an increment carrying an Idempotency-Key at most once. The record of the key and the HINCRBY are
  one atomic step, so a retry is recognised even when the first attempt's reply was lost (a client timeout
  after Redis had applied it). Every key shares the shard's hash tag, so this also holds on Redis Cluster.
  The shard's index of records (member: record digest, score: when it expires) bounds how many there are;
  expired members are dropped here only at the bound, and by the syncer every cycle.

  KEYS[1]  dirty hash of the shard
  KEYS[2]  idempotency record (per client and Idempotency-Key)
  KEYS[3]  index of the shard's idempotency records (sorted set)

  ARGV[1]  counter key
  ARGV[2]  value (integer)
  ARGV[3]  fingerprint of the request body
  ARGV[4]  record time to live, seconds
  ARGV[5]  now, ms since the epoch
  ARGV[6]  most records the shard may hold
  ARGV[7]  record digest (the index member)

  Returns  1 when the increment was applied now, 0 when this key already applied the same body (a
           replay: nothing done), -1 when this key was used with a different body (nothing done), -2 when
           the shard holds as many records as it may (nothing done).
]]
local recorded = redis.call('GET', KEYS[2])
if recorded then
  if recorded == ARGV[3] then
    return 0
  end
  return -1
end
local limit = tonumber(ARGV[6])
if redis.call('ZCARD', KEYS[3]) >= limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
  if redis.call('ZCARD', KEYS[3]) >= limit then
    return -2
  end
end
-- The first write that needs memory, so a full Redis refuses it with nothing done (unless the prune above
-- freed memory first: Redis checks memory only before a script's first write).
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('ZADD', KEYS[3], tonumber(ARGV[5]) + tonumber(ARGV[4]) * 1000, ARGV[7])
return 1

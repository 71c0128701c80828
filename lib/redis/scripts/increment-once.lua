--[[
  Applies an increment carrying an Idempotency-Key at most once. The record of the key and the HINCRBY are
  one atomic step, so a retry is recognised even when the first attempt's reply was lost (a client timeout
  after Redis had applied it). Both keys share the shard's hash tag, so this also holds on Redis Cluster.

  KEYS[1]  dirty hash of the shard
  KEYS[2]  idempotency record (per client and Idempotency-Key)

  ARGV[1]  counter key
  ARGV[2]  value (integer)
  ARGV[3]  fingerprint of the request body
  ARGV[4]  record time to live, seconds

  Returns  1 when the increment was applied now, 0 when this key already applied the same body (a
           replay: nothing done), -1 when this key was used with a different body (nothing done).
]]
local recorded = redis.call('GET', KEYS[2])
if recorded then
  if recorded == ARGV[3] then
    return 0
  end
  return -1
end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
return 1

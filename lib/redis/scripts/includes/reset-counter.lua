--[[
  resetCounter(dirty, resets, key): sets a counter back to zero in its shard. The key goes into the shard's
  resets set, which the next swap moves aside with the dirty hash, so that the syncer deletes the key's row
  in the same transaction that applies the batch; its delta in the dirty hash, accepted before the reset, is
  dropped. Increments after the reset land in the dirty hash and count from zero.

  Returns nil when done, else the code Redis refused the write with (OOM, NOREPLICAS, ...): nothing done.
]]
local function resetCounter(dirty, resets, key)
  local reply = redis.pcall('SADD', resets, key)
  if type(reply) == 'table' and reply.err then
    return string.match(reply.err, '^(%S+)')
  end
  redis.call('HDEL', dirty, key)
  return nil
end

--[[
  Applies the increments an API node received in one event-loop turn to one shard's dirty hash, in one
  round trip. Each stands alone, as a HINCRBY of its own would: one that fails (the pending total would leave
  the 64-bit range) is refused and the others are applied.

  KEYS[1]  dirty hash of the shard

  ARGV     counter key and value (integer) pairs: key1, value1, key2, value2, ...

  Returns  one entry per pair, in order: 1 when applied, or the error HINCRBY answered for it.
]]
local results = {}
for i = 1, #ARGV, 2 do
  local reply = redis.pcall('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  if type(reply) == 'table' and reply.err then
    results[#results + 1] = reply.err
  else
    results[#results + 1] = 1
  end
end
return results

--[[
  Applies increments to one shard's dirty hash in one round trip, in groups: the increments an API node
  received in one event-loop turn, where each request's part in this shard is a group (a POST /increment
  is a group of one). A group is applied whole or not at all: when one of its HINCRBYs fails (the pending
  total would leave the 64-bit range), the ones before it in the group are undone, and the other groups
  are applied as if it had not been sent. Undoing is exact: a HINCRBY that succeeded can be reversed.

  KEYS[1]  dirty hash of the shard

  ARGV[1]  number of groups, g
  ARGV[2 .. g+1]  the number of increments in each group, in order
  then     counter key and value (integer) pairs of every group, in order: key1, value1, key2, value2, ...

  Returns  one entry per group, in order: 1 when applied, or "<position in the group>:<error HINCRBY
           answered>" (position from 1) when it was refused, with nothing of it applied.
]]
-- As text: a Lua number would print a large value in exponent notation, which HINCRBY refuses.
local function negated(value)
  if string.sub(value, 1, 1) == '-' then
    return string.sub(value, 2)
  end
  return '-' .. value
end

local groups = tonumber(ARGV[1])
local results = {}
local at = groups + 2
for g = 1, groups do
  local size = tonumber(ARGV[g + 1])
  local failed = nil
  for i = 0, size - 1 do
    local key, value = ARGV[at + 2 * i], ARGV[at + 2 * i + 1]
    local reply = redis.pcall('HINCRBY', KEYS[1], key, value)
    if type(reply) == 'table' and reply.err then
      failed = (i + 1) .. ':' .. reply.err
      for j = i - 1, 0, -1 do
        local undone = ARGV[at + 2 * j + 1]
        -- Adding 0 changed nothing, and "-0" is no integer to Redis.
        if undone ~= '0' then
          local key = ARGV[at + 2 * j]
          -- A pending 0 counts nothing: drop the field rather than leave one the refused group made.
          if redis.call('HINCRBY', KEYS[1], key, negated(undone)) == 0 then
            redis.call('HDEL', KEYS[1], key)
          end
        end
      end
      break
    end
  end
  results[g] = failed or 1
  at = at + 2 * size
end
return results

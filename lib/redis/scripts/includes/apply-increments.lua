--[[
  unpackIncrements(packed): the increments of one group, sent as one argument, a JSON array of strings
  ["key1", "value1", "key2", "value2", …], as the table {key1, value1, key2, value2, …}. One argument per
  group instead of two per increment spares the client and Redis most of the work of a large batch. A value
  is an integer's decimal text, so one beyond 2^53 stays exact.

  applyIncrements(hash, pairs, from, count): HINCRBY of `count` counter key and value pairs of `pairs` (an
  ARGV-like table, the first key at `from`), whole or not at all. When one is refused, the ones before it are
  undone (a HINCRBY that succeeded can be reversed exactly), and a field the refused part created is dropped
  rather than left at 0.

  Returns nil when every increment was applied, else {position from 1, reason}: "overflow" when the pending
  total would leave the signed 64-bit range (the only error HINCRBY answers for an integer value and an
  integer field), else the code Redis refused the write with (OOM, NOREPLICAS, ...).
]]
-- As text: a Lua number would print a large value in exponent notation, which HINCRBY refuses.
local function negated(value)
  if string.sub(value, 1, 1) == '-' then
    return string.sub(value, 2)
  end
  return '-' .. value
end

-- cjson decodes in C; splitting a packed text with string.find and string.sub in Lua cost Redis more.
local function unpackIncrements(packed)
  return cjson.decode(packed)
end

local function applyIncrements(hash, pairs, from, count)
  for i = 0, count - 1 do
    local reply = redis.pcall('HINCRBY', hash, pairs[from + 2 * i], pairs[from + 2 * i + 1])
    if type(reply) == 'table' and reply.err then
      for j = i - 1, 0, -1 do
        local key, undone = pairs[from + 2 * j], pairs[from + 2 * j + 1]
        -- Adding 0 changed nothing, and "-0" is no integer to Redis.
        if undone ~= '0' and redis.call('HINCRBY', hash, key, negated(undone)) == 0 then
          redis.call('HDEL', hash, key)
        end
      end
      local code = string.match(reply.err, '^(%S+)')
      return {i + 1, code == 'ERR' and 'overflow' or code}
    end
  end
  return nil
end

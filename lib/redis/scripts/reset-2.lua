--[[
  Resets a counter (DELETE /counters/{key} without an Idempotency-Key); see includes/reset-counter.lua.
  One step, ordered against the increments of the same shard: each lands wholly before or after it.

  KEYS[1]  dirty hash of the key's shard
  KEYS[2]  resets set of the shard

  ARGV[1]  counter key

  Returns  {"applied"}, or {"refused", 1, reason}: Redis refused the write (nothing done).
]]
--- @include "reset-counter"

local refusal = resetCounter(KEYS[1], KEYS[2], ARGV[1])
if refusal then
  return {'refused', 1, refusal}
end
return {'applied'}

--[[
  Applies increments to one shard's dirty hash in one round trip, in groups: the increments an API node
  received in one event-loop turn, where each request's part in this shard is a group (a POST /increment
  is a group of one). A group is applied whole or not at all; the other groups are applied as if a refused
  one had not been sent.

  KEYS[1]  dirty hash of the shard

  ARGV     one per group, in order: its increments packed as a JSON array ["key", "value", …] (see
           includes/apply-increments.lua)

  Returns  one entry per group, in order: "applied", or {"refused", position in the group from 1, reason}
           (reason: "overflow", or the code Redis refused the write with), with nothing of it applied.
]]
--- @include "apply-increments"

local results = {}
for g = 1, #ARGV do
  local pairs = unpackIncrements(ARGV[g])
  local refusal = applyIncrements(KEYS[1], pairs, 1, #pairs / 2)
  results[g] = refusal and {'refused', refusal[1], refusal[2]} or 'applied'
end
return results

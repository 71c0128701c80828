--[[
  Applies increments to one shard's dirty hash in one round trip, in groups: the increments an API node
  received in one event-loop turn, where each request's part in this shard is a group (a POST /increment
  is a group of one). A group is applied whole or not at all; the other groups are applied as if a refused
  one had not been sent.

  KEYS[1]  dirty hash of the shard

  ARGV[1]  number of groups, g
  ARGV[2 .. g+1]  the number of increments in each group, in order
  then     counter key and value (integer) pairs of every group, in order: key1, value1, key2, value2, ...

  Returns  one entry per group, in order: "applied", or {"refused", position in the group from 1, reason}
           (reason: "overflow", or the code Redis refused the write with), with nothing of it applied.
]]
--- @include "apply-increments"

local groups = tonumber(ARGV[1])
local results = {}
local at = groups + 2
for g = 1, groups do
  local size = tonumber(ARGV[g + 1])
  local refusal = applyIncrements(KEYS[1], ARGV, at, size)
  results[g] = refusal and {'refused', refusal[1], refusal[2]} or 'applied'
  at = at + 2 * size
end
return results

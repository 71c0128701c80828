#!lua flags=allow-oom
--[[
  Takes a shard's syncer lease, or extends it when the caller already holds it.
  Runs under a full Redis (allow-oom): a syncer must be able to take a shard exactly when Redis is full,
  since only its sync frees memory.

  KEYS[1]  the shard's lease key

  ARGV[1]  holder id of the caller
  ARGV[2]  lease time to live, ms

  Returns  "held" when the caller holds the lease afterwards, "taken" when another holder does.
]]
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'held'
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'held'
end
return 'taken'

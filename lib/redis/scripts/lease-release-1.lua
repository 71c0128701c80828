#!lua flags=allow-oom
--[[
  Gives up a shard's syncer lease so that another syncer takes it at once instead of after the TTL.
  Runs under a full Redis (allow-oom), like the claim.

  KEYS[1]  the shard's lease key

  ARGV[1]  holder id of the caller

  Returns  "released" when the caller's lease was released, "not-held" when it did not hold it.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 'released'
end
return 'not-held'

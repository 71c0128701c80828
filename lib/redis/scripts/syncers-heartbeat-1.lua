#!lua flags=allow-oom
--[[
  Says that a syncer process is alive, forgets those that stopped saying so, and counts the living: the
  syncers share the shards' leases fairly by that count. Time is Redis' own (TIME), so the processes'
  clocks need not agree. Runs under a full Redis (allow-oom), like the leases.

  KEYS[1]  the syncers' sorted set (member: holder id, score: ms at which it is forgotten)

  ARGV[1]  holder id of the caller
  ARGV[2]  how long the caller counts as alive without another heartbeat, ms

  Returns  the number of syncers alive, the caller included.
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZCARD', KEYS[1])

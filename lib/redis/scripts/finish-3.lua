#!lua flags=allow-oom
--[[
  Ends a batch after Postgres committed it: deletes the flushing hash and resets set, but only while they
  still hold that batch. A slow syncer finishing a batch that another syncer already finished must never delete
  the newer batch swapped in since.
  UNLINK, not DEL: DEL frees a hash field by field while Redis serves nobody else (measured: 25 ms for
  110,000 fields, every cycle); UNLINK hands a large one to a background thread.
  Runs under a full Redis (allow-oom): finishing a batch is what frees Redis.

  KEYS[1]  flushing hash
  KEYS[2]  flushing meta hash
  KEYS[3]  flushing resets set

  ARGV[1]  id of the committed batch

  Returns  "finished" when the batch was deleted, "other" when the meta names another batch or none.
]]
if redis.call('HGET', KEYS[2], 'batch') == ARGV[1] then
  redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
  return 'finished'
end
return 'other'

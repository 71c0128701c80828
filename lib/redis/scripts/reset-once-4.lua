--[[
  Resets a counter at most once per Idempotency-Key record: the reset and its record are one step. See
  includes/reset-counter.lua and includes/idempotency-record.lua.

  KEYS[1]  dirty hash of the key's shard
  KEYS[2]  resets set of the shard
  KEYS[3]  idempotency record (per client and Idempotency-Key)
  KEYS[4]  index of the shard's idempotency records (sorted set)

  ARGV[1]  fingerprint of the request
  ARGV[2]  record time to live, seconds
  ARGV[3]  now, ms since the epoch
  ARGV[4]  most records the shard may hold
  ARGV[5]  record digest (the index member)
  ARGV[6]  counter key

  Returns  {"applied"}; {"replayed"}: this record already reset the key (nothing done now); {"reused"}: the
           record belongs to another request; {"full"}: the shard holds as many records as it may;
           {"refused", 1, reason}: Redis refused the write. Nothing is done but for "applied".
]]
--- @include "idempotency-record"
--- @include "reset-counter"

local answer = answerOfRecord(KEYS[3], ARGV[1])
if answer then
  return {answer}
end
if recordsFull(KEYS[4], ARGV[3], tonumber(ARGV[4])) then
  return {'full'}
end
local refusal = resetCounter(KEYS[1], KEYS[2], ARGV[6])
if refusal then
  return {'refused', 1, refusal}
end
keepRecord(KEYS[3], ARGV[1], ARGV[2], KEYS[4], ARGV[3], ARGV[5])
return {'applied'}

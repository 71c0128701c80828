-- wrk script: POST /increment with a bearer token from $TOKEN over $KEYS keys (default 10000).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")
local keys = tonumber(os.getenv("KEYS") or "10000")
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"key":"bench:' .. (counter % keys) .. '","value":1}')
end

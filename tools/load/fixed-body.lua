-- wrk script: the same POST body, read from the file $BODY_FILE, in every request, with a bearer token from
-- $TOKEN (a batch for POST /increments).
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")

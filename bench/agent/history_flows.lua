-- wrk script for bench/agent_path.sh's history part: a flow turn ("order N status", the bench
-- config's order_status flow) in a new session each time.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format(
    '{"message":"order %d status","session_id":"hist-%d-%d"}', 1000 + n % 9000, math.random(1, 1000000000), n))
end

-- wrk script for the gateway's flow path (see gateway/README.md "Benchmark"):
--   wrk -t2 -c64 -d5s -s gateway/bench/post.lua http://127.0.0.1:18000/api/v1/query
-- wrk speaks HTTP/1.1 and sends no Connection header: the gateway keeps connections alive.
wrk.method = "POST"
wrk.body = '{"message":"check order 1234 status","session_id":"bench-session"}'
wrk.headers["Content-Type"] = "application/json"

-- Count answers that are not 200 so a fast failure is not mistaken for throughput.
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("non-200 answers: %d\n", summary.errors.status))
  io.write(string.format("p50 %.3f ms  p90 %.3f ms  p99 %.3f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end

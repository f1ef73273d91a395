#!/usr/bin/env bash
# Starts wf-demo-api on a free port of 127.0.0.1 and runs bench_http_client against it in both
# modes at concurrency 1 and 64. Prints the machine load first (figures are noisy under load).
#   bench/http_client/run.sh [BUILD_DIR] [REQUESTS]
# BENCH=/path/to/bench_http_client runs another build of the benchmark (e.g. one of an older
# commit) against the same server.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
requests=${2:-20000}
bench=${BENCH:-$build/bin/bench_http_client}
log=$(mktemp)
"$build/bin/wf-demo-api" --listen 127.0.0.1:0 --threads 2 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
port=""
for _ in $(seq 1 150); do  # Up to 15 s for the "listening on HOST:PORT" line.
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "wf-demo-api did not start"; cat "$log"; exit 1; }
echo "# $(uptime)"
echo "# commit $(git -C "$root" rev-parse --short HEAD) bench $bench"
for mode in chained foreign; do
  "$bench" --url "http://127.0.0.1:$port/api/orders/1234" \
    --requests "$requests" --concurrency 1,64 --mode "$mode"
done

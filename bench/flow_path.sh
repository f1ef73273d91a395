#!/usr/bin/env bash
# Flow-path benchmark: wrk (keep-alive) on POST /api/v1/query through
# wf-gateway -> NATS -> wf-lightweight -> wf-demo-api, at c = 1, 16, 64 for DURATION each.
# Prints req/s, p50, p99, the CPU time each process spent per request (user + system, from
# /proc) and the RSS of every process before and after. Starts and stops its own servers on free
# ports. Usage: bench/flow_path.sh [DURATION, default 10s]
# Env: WF_BIN_DIR (default build/bin; another build's binaries for an A/B run), CONCS
#      (connection counts, default "1 16 64"), GW_THREADS (wf-gateway --threads, default 2),
#      LW_THREADS (wf-lightweight --threads, default 1), PIN (CPU placement, e.g.
#      "gw=0 lw=0 api=0 nats=0 wrk=1": each named process, all its threads, on that CPU list;
#      unnamed ones float; default: nothing pinned), NATS_ENV (prefix for the nats-server
#      command; default as scripts/run.sh starts it: "env GOMAXPROCS=1" on 2 cores or fewer,
#      else "env"; "env" for Go's default).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${WF_BIN_DIR:-$ROOT/build/bin}
CONCS=${CONCS:-"1 16 64"}
DURATION=${1:-10s}
[[ "$DURATION" =~ ^[0-9]+s$ ]] || { echo "flow_path.sh: DURATION must be whole seconds, e.g. 10s" >&2; exit 2; }
WORK=$(mktemp -d /tmp/wf-bench-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2/1024 " MB"}' "/proc/$1/status"; }

read -r NATS_PORT API_PORT GW_PORT <<<"$(free_ports 3)"
# shellcheck disable=SC2046  # the prefix is several words
$(nats_env) nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 & PIDS+=($!); NATS_PID=$!
"$BIN/wf-demo-api" --listen "127.0.0.1:$API_PORT" --threads 1 >"$WORK/api.log" 2>&1 & PIDS+=($!); API_PID=$!
wait_port "$NATS_PORT"; wait_port "$API_PORT"
sed "s#http://127.0.0.1:8081#http://127.0.0.1:$API_PORT#g" config/workflow_config.json >"$WORK/config.json"
"$BIN/wf-lightweight" --config "$WORK/config.json" --nats-url "nats://127.0.0.1:$NATS_PORT" --threads "${LW_THREADS:-1}" \
  --log-level warn >"$WORK/lw.log" 2>&1 & PIDS+=($!); LW_PID=$!
"$BIN/wf-gateway" --config "$WORK/config.json" --nats-url "nats://127.0.0.1:$NATS_PORT" \
  --listen "127.0.0.1:$GW_PORT" --threads "${GW_THREADS:-2}" --log-level warn >"$WORK/gw.log" 2>&1 & PIDS+=($!); GW_PID=$!
wait_port "$GW_PORT"
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$GW_PORT/ready" >/dev/null && break; sleep 0.1; done
WRK_PIN=()
for spec in ${PIN:-}; do
  name=${spec%%=*}; cpus=${spec#*=}
  case $name in
    gw) pid=$GW_PID ;; lw) pid=$LW_PID ;; api) pid=$API_PID ;; nats) pid=$NATS_PID ;;
    wrk) WRK_PIN=(taskset -c "$cpus"); continue ;;
    *) echo "flow_path.sh: PIN: unknown process '$name' (gw, lw, api, nats, wrk)" >&2; exit 2 ;;
  esac
  taskset -a -p -c "$cpus" "$pid" >/dev/null
done
[[ -n "${PIN:-}" ]] && echo "pinned: $PIN"

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"message":"check order 1234","session_id":"bench-1"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Connection"] = "keep-alive"
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.errors.status))
end
LUA
echo "sample answer: $(curl -s "http://127.0.0.1:$GW_PORT/api/v1/query" -H 'Content-Type: application/json' \
  -d '{"message":"check order 1234","session_id":"bench-1"}')"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "nats-server under: $(nats_env)"
echo "before: $(calibrate)"
echo "RSS before: gateway $(rss $GW_PID), lightweight $(rss $LW_PID), demo-api $(rss $API_PID), nats $(rss $NATS_PID)"
for c in $CONCS; do
  threads=$((c < 2 ? 1 : 2))
  declare -A before=()
  for name in GW LW API NATS; do pid_var=${name}_PID; before[$name]=$(ticks "${!pid_var}"); done
  out=$("${WRK_PIN[@]}" wrk -t"$threads" -c"$c" -d"$DURATION" --latency -s "$WORK/post.lua" "http://127.0.0.1:$GW_PORT/api/v1/query" | grep RESULT)
  echo "c=$c ${out#RESULT }"
  # CPU per request: ticks spent during the run over the requests wrk counted (rps x seconds).
  rps=$(sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$out")
  secs=${DURATION%s}
  line="      CPU per request:"
  total=0
  for name in GW LW API NATS; do
    pid_var=${name}_PID
    us=$(( ( $(ticks "${!pid_var}") - before[$name] ) * 1000000 / TICK_HZ / (rps * secs > 0 ? rps * secs : 1) ))
    total=$((total + us))
    line+=" ${name,,} ${us} us,"
  done
  echo "$line sum ${total} us"
done
echo "RSS after:  gateway $(rss $GW_PID), lightweight $(rss $LW_PID), demo-api $(rss $API_PID), nats $(rss $NATS_PID)"
sleep 5
echo "RSS idle:   gateway $(rss $GW_PID), lightweight $(rss $LW_PID), demo-api $(rss $API_PID), nats $(rss $NATS_PID)"
echo "after:  $(calibrate)"
echo "command: bench/flow_path.sh $DURATION"

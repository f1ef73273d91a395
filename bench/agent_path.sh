#!/usr/bin/env bash
# Benchmarks the agent path (gateway -> NATS -> lightweight -> JetStream -> heavy -> scripted LLM):
#   1. TTFT through the gateway vs directly from the scripted LLM (N sequential requests each)
#   2. agent turns/s, POST /api/v1/query, K concurrent clients for a fixed time
#   3. concurrent hanging SSE streams (1,000, then 5,000 if the first succeeds)
# Starts its own stack on free ports from build/bin, prints every figure, stops everything on exit.
# Env: WF_BIN_DIR (default build/bin), N (200), K (16), SECONDS_TURNS (10), STREAMS ("1000 5000"),
#      PARTS (parts to run, default "1 2 3"; e.g. PARTS=1 for TTFT alone).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${WF_BIN_DIR:-$ROOT/build/bin}
N=${N:-200}
K=${K:-16}
SECONDS_TURNS=${SECONDS_TURNS:-10}
STREAMS=${STREAMS:-"1000 5000"}
PARTS=${PARTS:-"1 2 3"}
want() { [[ " $PARTS " == *" $1 "* ]]; }
PG_BIN=/usr/lib/postgresql/15/bin
BENCH=$ROOT/bench/agent/agent_bench.py

# Many sockets in part 3: raise the descriptor limit as far as we are allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

for b in wf-gateway wf-lightweight wf-heavy wf-demo-api wf-scripted-llm; do
  [[ -x "$BIN/$b" ]] || { echo "agent_path.sh: $BIN/$b missing (cmake --build build --target $b)" >&2; exit 1; }
done

RUN=$(mktemp -d /tmp/wf-agent-bench.XXXXXX)
chmod 755 "$RUN"
PIDS=()
PG_STARTED=
cleanup() {
  trap - INT TERM EXIT
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$PG_STARTED" ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$RUN"
}
trap cleanup INT TERM EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # wait_port PORT NAME
  for _ in $(seq 1 300); do port_busy "$1" && return 0; sleep 0.1; done
  echo "agent_path.sh: $2 did not open port $1; log:" >&2; tail -n 20 "$RUN/$2.log" >&2 || true; exit 1
}
LAST_PID=
start() {  # start NAME CMD...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

NATS_PORT=$(free_port); REDIS_PORT=$(free_port); PG_PORT=$(free_port)
API_PORT=$(free_port); LLM_PORT=$(free_port); GW_PORT=$(free_port)

start nats nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN/nats"
wait_port "$NATS_PORT" nats
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN" --save "" --appendonly no --daemonize no
wait_port "$REDIS_PORT" redis

mkdir -p "$RUN/pg" "$RUN/pgsock"
chown postgres:postgres "$RUN/pg" "$RUN/pgsock"
chmod 700 "$RUN/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$RUN/pg" -A trust -U postgres -E UTF8 >"$RUN/initdb.log" 2>&1
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN/pg" -l "$RUN/pgsock/postgres.log" \
  -o "-p $PG_PORT -k $RUN/pgsock -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
PG_STARTED=1
wait_port "$PG_PORT" postgres

start demo-api "$BIN/wf-demo-api" --listen "127.0.0.1:$API_PORT"
wait_port "$API_PORT" demo-api

cat >"$RUN/rules.json" <<'JSON'
{"default_delay_ms": 0,
 "default_reply": "Hello! You said: {last_user}.",
 "rules": [
  {"name": "hang", "when": {"last_user_contains": "hang"}, "then": {"hang": true}},
  {"name": "hi", "when": {"last_user_regex": "(?i)^hi"}, "then": {"reply": "Hello there, how can I help you today?", "delay_ms": 0}}
 ]}
JSON
start scripted-llm "$BIN/wf-scripted-llm" --listen "127.0.0.1:$LLM_PORT" --rules "$RUN/rules.json" \
  --log-level warn --max-hang-s 600
wait_port "$LLM_PORT" scripted-llm

cat >"$RUN/config.json" <<JSON
{
  "agent": {"turn_timeout_ms": 120000},
  "flows": [
    {"flow_id": "order_status", "name": "Order status",
     "trigger_patterns": ["order\\\\s*#?(?P<order_id>\\\\d+)\\\\s+status"],
     "endpoint": {"url": "http://127.0.0.1:$API_PORT/api/orders/{order_id}", "method": "GET", "timeout_ms": 3000},
     "response_template": "Order {order_id}: {result.status}"}
  ]
}
JSON

export WF_CONFIG=$RUN/config.json
export NATS_URL=nats://127.0.0.1:$NATS_PORT
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
export LLM_BASE_URL=http://127.0.0.1:$LLM_PORT/v1
export LLM_MODEL=scripted
export WF_LOG_LEVEL=warn

start lightweight "$BIN/wf-lightweight" --threads 1
start_heavy() {  # start_heavy CONCURRENCY
  HEAVY_ADMIN=$(free_port)
  start "heavy-$1" "$BIN/wf-heavy" --concurrency "$1" --drain-ms 2000 --admin-listen "127.0.0.1:$HEAVY_ADMIN"
  HEAVY_PID=$LAST_PID
}
start_heavy 64
start gateway "$BIN/wf-gateway" --listen "127.0.0.1:$GW_PORT" --heartbeat-ms 1000 --drain-ms 1000
GW_PID=$LAST_PID
wait_port "$GW_PORT" gateway
wait_ready() {
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$GW_PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "agent_path.sh: gateway never ready: $(curl -sS "http://127.0.0.1:$GW_PORT/ready")" >&2; exit 1
}
wait_ready

echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -r)"
echo "# git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), open-files limit $(ulimit -n)"
echo "# stack: nats :$NATS_PORT, redis :$REDIS_PORT, postgres :$PG_PORT, scripted LLM :$LLM_PORT, gateway :$GW_PORT (2 threads, heartbeat 1 s), 1 lightweight, 1 heavy"
echo

if want 1; then
  echo "\$ python3 bench/agent/agent_bench.py ttft --gw $GW_PORT --llm $LLM_PORT --n $N"
  python3 "$BENCH" ttft --gw "$GW_PORT" --llm "$LLM_PORT" --n "$N"
  echo
fi

if want 2; then
  echo "\$ python3 bench/agent/agent_bench.py turns --gw $GW_PORT --k $K --seconds $SECONDS_TURNS (heavy --concurrency 64)"
  python3 "$BENCH" turns --gw "$GW_PORT" --k "$K" --seconds "$SECONDS_TURNS" \
    --pids "wf-heavy=$HEAVY_PID,wf-gateway=$GW_PID"
  echo
fi
want 3 || exit 0

# Part 3: a heavy worker that takes 6000 turns at once.
kill -TERM "$HEAVY_PID"; wait "$HEAVY_PID" 2>/dev/null || true
start_heavy 6000
sleep 1
wait_ready
for count in $STREAMS; do
  echo "\$ python3 bench/agent/agent_bench.py streams --gw $GW_PORT --llm $LLM_PORT --count $count (heavy --concurrency 6000)"
  if ! python3 "$BENCH" streams --gw "$GW_PORT" --llm "$LLM_PORT" --count "$count" \
      --gw-pid "$GW_PID" --heavy-pid "$HEAVY_PID" --heavy-admin "$HEAVY_ADMIN"; then
    echo "(stopping: $count streams did not all succeed)"
    break
  fi
  echo
done
for p in "$GW_PID" "$HEAVY_PID"; do
  kill -0 "$p" 2>/dev/null || echo "agent_path.sh: process $p died; logs in $RUN" >&2
done

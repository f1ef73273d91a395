#!/usr/bin/env bash
# Benchmarks the agent path (gateway -> NATS -> lightweight -> JetStream -> heavy -> scripted LLM):
#   ttft    TTFT through the gateway vs directly from the scripted LLM (N sequential requests each)
#   turns   agent turns/s, POST /api/v1/query, K concurrent clients for SECONDS_TURNS seconds
#   sse-turns the same through POST /api/v1/query/stream (every token event on its way, each
#           stream read to its end)
#   soak    TURNS agent turns (K clients) through one heavy worker; turns/s and the RSS of wf-heavy
#           and wf-gateway at the start, every REPORT_EVERY turns, at the end and after a pause
#   history WF_HISTORY stored by one heavy worker: flow turns (a new session each, wrk -c64 for
#           HISTORY_LOAD_S seconds) recorded while wf-heavy is stopped (SIGSTOP), then the time
#           until it has stored them all (SIGCONT; PostgreSQL's runs counted every 0.1 s)
#   streams concurrent hanging SSE streams, each size of STREAMS in turn (stops at the first that
#           fails); every stream must get 200 + a heartbeat, its turn must hang at the scripted LLM
#           and survive HOLD_S seconds, and closing them must cancel every turn
# Starts its own stack on free ports from build/bin, prints every figure, stops everything on exit.
# Env: WF_BIN_DIR (default build/bin), PARTS ("ttft turns sse-turns soak history streams"), N (200), K (16),
#      HISTORY_LOAD_S (5),
#      TTFT_NEW_CONNECTIONS (1: a new connection per gateway turn in ttft), TTFT_ORDER
#      (sequential, the default: all direct requests, then the turns; interleaved: a direct
#      request, a first turn and its follow-up per round, see agent_bench.py ttft_samples), SECONDS_TURNS (10), TURNS (100000), REPORT_EVERY (20000), STREAMS ("1000 5000 10000"),
#      HOLD_S (5), STREAMS_CONCURRENCY (wf-heavy --concurrency for the streams; default the
#      largest of STREAMS), HEAVY_WRAP (command prefix for wf-heavy, e.g. "heaptrack -o FILE";
#      wf-heavy itself, the wrapper's child, is signalled and measured), ROUND_HOOK (command
#      run after each streams round with HEAVY_PID exported, e.g. bench/agent/malloc_trim_hook.sh),
#      NATS_ENV (command prefix for nats-server; default as scripts/run.sh starts it:
#      "env GOMAXPROCS=1" on 2 cores or fewer, else "env"; "env" for Go's default),
#      PG_DELAY_MS (0; else wf-heavy reaches PostgreSQL through bench/agent/delay_proxy.py,
#      which delays its answers by that much: a PostgreSQL on another host), LLM_DELAY_MS (0:
#      the scripted LLM's delay per token of the ttft/turns answers, e.g. 20 for a real model's
#      pace; the first token comes that much after the request, direct or not).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${WF_BIN_DIR:-$ROOT/build/bin}
PARTS=${PARTS:-"ttft turns sse-turns soak history streams"}
HISTORY_LOAD_S=${HISTORY_LOAD_S:-5}
N=${N:-200}
K=${K:-16}
SECONDS_TURNS=${SECONDS_TURNS:-10}
TURNS=${TURNS:-100000}
REPORT_EVERY=${REPORT_EVERY:-20000}
STREAMS=${STREAMS:-"1000 5000 10000"}
HOLD_S=${HOLD_S:-5}
MAX_STREAMS=0
for c in $STREAMS; do ((c > MAX_STREAMS)) && MAX_STREAMS=$c; done
STREAMS_CONCURRENCY=${STREAMS_CONCURRENCY:-$MAX_STREAMS}
# The scripted LLM serves a thread per connection up to --max-connections: every hanging turn
# holds one, plus room for the benchmark's /_stats probes.
LLM_MAX_CONNECTIONS=$((STREAMS_CONCURRENCY > 448 ? STREAMS_CONCURRENCY + 64 : 512))
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
PG_BIN=/usr/lib/postgresql/15/bin
BENCH=$ROOT/bench/agent/agent_bench.py

# Many sockets in the streams part: raise the descriptor limit as far as we are allowed. Each
# process has its own limit; a hanging stream holds one descriptor in the client, the gateway,
# wf-heavy (its LLM connection) and the scripted LLM each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if has_part streams && ((MAX_STREAMS + 512 > $(ulimit -n))); then
  echo "agent_path.sh: $MAX_STREAMS streams need more than the open-files limit $(ulimit -n) allows" >&2
  exit 1
fi

for b in wf-gateway wf-lightweight wf-heavy wf-demo-api wf-scripted-llm; do
  [[ -x "$BIN/$b" ]] || { echo "agent_path.sh: $BIN/$b missing (cmake --build build --target $b)" >&2; exit 1; }
done

RUN=$(mktemp -d /tmp/wf-agent-bench.XXXXXX)
chmod 755 "$RUN"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_stack_init

# wf-heavy is started twice (for the streams again, with another concurrency): a port each.
read -r NATS_PORT REDIS_PORT PG_PORT API_PORT LLM_PORT GW_PORT HEAVY_ADMIN_FIRST \
  HEAVY_ADMIN_SECOND <<<"$(free_ports 8)"

# shellcheck disable=SC2086  # NATS_ENV is a command prefix (e.g. "env GOMAXPROCS=1")
# shellcheck disable=SC2046  # the prefix is several words
start nats $(nats_env) nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN/nats"
NATS_PID=$LAST_PID
wait_port "$NATS_PORT" nats
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN" --save "" --appendonly no --daemonize no
REDIS_PID=$LAST_PID
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

LLM_DELAY_MS=${LLM_DELAY_MS:-0}
cat >"$RUN/rules.json" <<JSON
{"default_delay_ms": 0,
 "default_reply": "Hello! You said: {last_user}.",
 "rules": [
  {"name": "hang", "when": {"last_user_contains": "hang"}, "then": {"hang": true}},
  {"name": "hi", "when": {"last_user_regex": "(?i)^hi"}, "then": {"reply": "Hello there, how can I help you today?", "delay_ms": $LLM_DELAY_MS}}
 ]}
JSON
start scripted-llm "$BIN/wf-scripted-llm" --listen "127.0.0.1:$LLM_PORT" --rules "$RUN/rules.json" \
  --log-level warn --max-hang-s 600 --max-connections "$LLM_MAX_CONNECTIONS"
LLM_PID=$LAST_PID
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
PG_NOTE=""
if [[ "${PG_DELAY_MS:-0}" != 0 ]]; then
  # PostgreSQL "further away" for wf-heavy: its answers reach it PG_DELAY_MS later.
  PG_PROXY_PORT=$(free_ports 1)
  start pg-delay python3 "$ROOT/bench/agent/delay_proxy.py" --listen "$PG_PROXY_PORT" \
    --target "$PG_PORT" --delay-ms "$PG_DELAY_MS"
  wait_port "$PG_PROXY_PORT" pg-delay
  export DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PROXY_PORT/postgres
  PG_NOTE=" (wf-heavy through a proxy :$PG_PROXY_PORT delaying its answers by $PG_DELAY_MS ms)"
fi
export LLM_BASE_URL=http://127.0.0.1:$LLM_PORT/v1
export LLM_MODEL=scripted
export WF_LOG_LEVEL=warn

start lightweight "$BIN/wf-lightweight" --threads 1
LW_PID=$LAST_PID
start_heavy() {  # start_heavy CONCURRENCY ADMIN_PORT
  HEAVY_ADMIN=$2
  # shellcheck disable=SC2086  # HEAVY_WRAP is a command prefix, e.g. "heaptrack -o /tmp/heavy"
  start "heavy-$1" ${HEAVY_WRAP:-} "$BIN/wf-heavy" --concurrency "$1" --drain-ms 2000 --admin-listen "127.0.0.1:$HEAVY_ADMIN"
  HEAVY_PID=$LAST_PID
  HEAVY_WRAPPER_PID=$LAST_PID
  wait_admin_ready "$HEAVY_ADMIN" "heavy-$1"
  # A wrapper that does not exec (heaptrack's shell) would take the TERM meant for wf-heavy and
  # leave it running: signal and measure wf-heavy itself.
  if [[ -n "${HEAVY_WRAP:-}" ]]; then
    local child
    child=$(pgrep -n -P "$LAST_PID" -x wf-heavy || true)
    if [[ -n "$child" ]]; then HEAVY_PID=$child; PIDS+=("$child"); fi
  fi
}
start_heavy 64 "$HEAVY_ADMIN_FIRST"
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
echo "# git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || echo ' (+ local changes)'), binaries $BIN, open-files limit $(ulimit -n)"
echo "# load: $(uptime | sed 's/.*load average/load average/')"
echo "# $(calibrate)"
echo "# stack: nats :$NATS_PORT ($(nats_env)), redis :$REDIS_PORT, postgres :$PG_PORT$PG_NOTE, scripted LLM :$LLM_PORT (--max-connections $LLM_MAX_CONNECTIONS), gateway :$GW_PORT (2 threads, heartbeat 1 s), 1 lightweight, 1 heavy"
echo

# `pg_sum ticks|switches`: that counter (lib.sh) summed over this cluster's postmaster and its
# children (one backend per connection), no other cluster's.
pg_sum() {
  local postmaster n=0 pid
  postmaster=$(head -n 1 "$RUN/pg/postmaster.pid")
  for pid in "$postmaster" $(pgrep -P "$postmaster" || true); do
    n=$((n + $("$1" "$pid")))
  done
  echo "$n"
}
# CPU time (user + system, clock ticks) and context switches of each process of the stack.
cpu_snapshot() {  # prints "name=ticks ..." for the stack's processes, then "sw:name=switches ..."
  echo "gateway=$(ticks "$GW_PID") lightweight=$(ticks "$LW_PID") heavy=$(ticks "$HEAVY_PID")" \
    "nats=$(ticks "$NATS_PID") redis=$(ticks "$REDIS_PID") postgres=$(pg_sum ticks) llm=$(ticks "$LLM_PID")" \
    "sw:gateway=$(switches "$GW_PID") sw:lightweight=$(switches "$LW_PID")" \
    "sw:heavy=$(switches "$HEAVY_PID") sw:nats=$(switches "$NATS_PID")" \
    "sw:redis=$(switches "$REDIS_PID") sw:postgres=$(pg_sum switches) sw:llm=$(switches "$LLM_PID")"
}
# cpu_per_turn "BEFORE" "AFTER" TURNS: microseconds of CPU per turn, and context switches per
# turn, per process.
cpu_per_turn() {
  local line="CPU per turn (µs):" sw_line="context switches per turn:" total=0 sw_total=0 b a name
  local us
  for b in $1; do
    name=${b%%=*}
    a=$(tr ' ' '\n' <<<"$2" | sed -n "s/^$name=//p")
    if [[ $name == sw:* ]]; then
      us=$(awk -v d=$((a - ${b#*=})) -v t="$3" 'BEGIN {printf "%.1f", d / t}')
      sw_total=$(awk -v s="$sw_total" -v d=$((a - ${b#*=})) -v t="$3" 'BEGIN {printf "%.1f", s + d / t}')
      sw_line+=" ${name#sw:} $us,"
      continue
    fi
    us=$(( (a - ${b#*=}) * 1000000 / TICK_HZ / $3 ))
    total=$((total + us))
    line+=" $name $us,"
  done
  echo "$line sum $total"
  echo "$sw_line sum $sw_total"
}

if has_part ttft; then
  ttft_args=(--gw "$GW_PORT" --llm "$LLM_PORT" --n "$N")
  [[ "${TTFT_NEW_CONNECTIONS:-0}" == 1 ]] && ttft_args+=(--new-connections)
  ttft_args+=(--order "${TTFT_ORDER:-sequential}")
  echo "\$ python3 bench/agent/agent_bench.py ttft ${ttft_args[*]}"
  before=$(cpu_snapshot)
  python3 "$BENCH" ttft "${ttft_args[@]}"
  cpu_per_turn "$before" "$(cpu_snapshot)" $((2 * N))
  echo "(the LLM's share includes the $N direct requests)"
  echo
fi

# turns/s through one of the two query endpoints: $1 = "" (POST /api/v1/query) or "--stream".
run_turns() {
  echo "\$ python3 bench/agent/agent_bench.py turns --gw $GW_PORT --k $K --seconds $SECONDS_TURNS $1 (heavy --concurrency 64)"
  local before out turns
  before=$(cpu_snapshot)
  # shellcheck disable=SC2086  # $1 is an optional flag
  out=$(python3 "$BENCH" turns --gw "$GW_PORT" --k "$K" --seconds "$SECONDS_TURNS" $1 \
    --pids "wf-heavy=$HEAVY_PID,wf-gateway=$GW_PID")
  echo "$out"
  turns=$(sed -n 's/^turns *: \([0-9]*\) .*/\1/p' <<<"$out")
  ((${turns:-0} > 0)) && cpu_per_turn "$before" "$(cpu_snapshot)" "$turns"
  echo
}
if has_part turns; then run_turns ""; fi
if has_part sse-turns; then run_turns --stream; fi

if has_part soak; then
  echo "\$ python3 bench/agent/agent_bench.py soak --gw $GW_PORT --k $K --turns $TURNS --report-every $REPORT_EVERY (heavy --concurrency 64)"
  echo "# load: $(uptime | sed 's/.*load average/load average/')"
  python3 "$BENCH" soak --gw "$GW_PORT" --k "$K" --turns "$TURNS" --report-every "$REPORT_EVERY" \
    --pids "wf-heavy=$HEAVY_PID,wf-gateway=$GW_PID"
  echo "# load: $(uptime | sed 's/.*load average/load average/')"
  echo
fi

if has_part history; then
  echo "\$ wrk -t2 -c64 -d${HISTORY_LOAD_S}s (flow turns, a new session each) with wf-heavy stopped; then one heavy worker stores WF_HISTORY"
  runs() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT count(*) FROM runs"; }
  records_before=$(python3 "$BENCH" stream-messages --nats "$NATS_PORT" --stream WF_HISTORY)
  kill -STOP "$HEAVY_PID"
  wrk -t2 -c64 -d"${HISTORY_LOAD_S}s" -s "$ROOT/bench/agent/history_flows.lua" \
    "http://127.0.0.1:$GW_PORT/api/v1/query" | grep -E "requests in|Requests/sec|Non-2xx" || true
  sleep 1  # the lightweight worker's last batch (5 ms) is in
  records=$(python3 "$BENCH" stream-messages --nats "$NATS_PORT" --stream WF_HISTORY)
  base=$(runs)
  before=$(cpu_snapshot)
  start_s=$(date +%s.%N)
  kill -CONT "$HEAVY_PID"
  last=$base; last_s=$start_s; still=0
  while ((still < 20)); do  # 2 s without a new run: done
    sleep 0.1
    now=$(runs)
    if [[ "$now" != "$last" ]]; then last=$now; last_s=$(date +%s.%N); still=0; else still=$((still + 1)); fi
  done
  stored=$((last - base))
  python3 -c "import sys; n, r, t = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) - float(sys.argv[4]);
print(f'history      : {n} turns in {r} records ({n / max(r, 1):.1f} turns each) stored in {t:.2f} s = {n / t:.0f} turns/s')" \
    "$stored" "$((records - records_before))" "$last_s" "$start_s"
  ((stored > 0)) && cpu_per_turn "$before" "$(cpu_snapshot)" "$stored"
  echo
fi

if has_part streams; then
  # A heavy worker that takes every stream's turn at once.
  kill -TERM "$HEAVY_PID"; wait "$HEAVY_WRAPPER_PID" 2>/dev/null || true
  start_heavy "$STREAMS_CONCURRENCY" "$HEAVY_ADMIN_SECOND"
  wait_ready
  for count in $STREAMS; do
    echo "\$ python3 bench/agent/agent_bench.py streams --gw $GW_PORT --llm $LLM_PORT --count $count --hold $HOLD_S (heavy --concurrency $STREAMS_CONCURRENCY)"
    echo "# load: $(uptime | sed 's/.*load average/load average/')"
    if ! python3 "$BENCH" streams --gw "$GW_PORT" --llm "$LLM_PORT" --count "$count" --hold "$HOLD_S" \
        --gw-pid "$GW_PID" --heavy-pid "$HEAVY_PID" --heavy-admin "$HEAVY_ADMIN" --llm-pid "$LLM_PID"; then
      echo "(stopping: $count streams did not all succeed)"
      break
    fi
    # shellcheck disable=SC2086  # ROUND_HOOK is a command line
    [[ -n "${ROUND_HOOK:-}" ]] && HEAVY_PID=$HEAVY_PID ${ROUND_HOOK}
    echo
  done
fi
for p in "$GW_PID" "$HEAVY_PID" "$LLM_PID"; do
  kill -0 "$p" 2>/dev/null || echo "agent_path.sh: process $p died; logs in $RUN" >&2
done
echo "# after: $(calibrate)"

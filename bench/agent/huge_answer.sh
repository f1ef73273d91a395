#!/usr/bin/env bash
# What one endless LLM answer costs wf-heavy: a scripted LLM streams ANSWER_MB MB of valid tokens
# (words of 1,000 bytes), once alone and then to CONCURRENT turns at once, through the gateway.
# Prints wf-heavy's RSS (and its peak, VmHWM) before and after each, the turns' outcomes, and
# what was stored: the Redis hot copy's MEMORY USAGE and the PostgreSQL assistant rows' length.
# Starts its own stack on free ports from build/bin, stops everything on exit.
# Env: WF_BIN_DIR (default build/bin), ANSWER_MB (100), CONCURRENT (4), MAX_ANSWER_BYTES (unset:
#      the config's default; set it only for binaries that know agent.max_answer_bytes).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${WF_BIN_DIR:-$ROOT/build/bin}
ANSWER_MB=${ANSWER_MB:-100}
CONCURRENT=${CONCURRENT:-4}
PG_BIN=/usr/lib/postgresql/15/bin

for b in wf-gateway wf-lightweight wf-heavy wf-scripted-llm; do
  [[ -x "$BIN/$b" ]] || { echo "huge_answer.sh: $BIN/$b missing" >&2; exit 1; }
done

RUN=$(mktemp -d /tmp/wf-huge-answer.XXXXXX)
chmod 755 "$RUN"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_stack_init

read -r NATS_PORT REDIS_PORT PG_PORT LLM_PORT GW_PORT HEAVY_ADMIN <<<"$(free_ports 6)"
# shellcheck disable=SC2046  # the prefix is several words
start nats $(nats_env) nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN/nats"
wait_port "$NATS_PORT" nats
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN" --save "" --appendonly no --daemonize no
wait_port "$REDIS_PORT" redis
mkdir -p "$RUN/pg" "$RUN/pgsock"
chown postgres:postgres "$RUN/pg" "$RUN/pgsock"
chmod 700 "$RUN/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$RUN/pg" -A trust -U postgres -E UTF8 >"$RUN/initdb.log" 2>&1
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN/pg" -l "$RUN/pgsock/postgres.log" \
  -o "-p $PG_PORT -k $RUN/pgsock -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
PG_STARTED=1
wait_port "$PG_PORT" postgres

python3 - "$RUN/rules.json" "$ANSWER_MB" <<'PY'
import json, sys
words = int(sys.argv[2]) * 1000  # 1,000-byte pieces: ANSWER_MB MB
json.dump({"rules": [{"when": {"last_user_contains": "endless"},
                      "then": {"reply": ("n" * 999 + " ") * words}}]}, open(sys.argv[1], "w"))
PY
start scripted-llm "$BIN/wf-scripted-llm" --listen "127.0.0.1:$LLM_PORT" --rules "$RUN/rules.json" --log-level warn
wait_port "$LLM_PORT" scripted-llm

AGENT='"turn_timeout_ms": 600000'
[[ -n "${MAX_ANSWER_BYTES:-}" ]] && AGENT="$AGENT, \"max_answer_bytes\": $MAX_ANSWER_BYTES"
echo "{\"agent\": {$AGENT}}" >"$RUN/config.json"
export WF_CONFIG=$RUN/config.json NATS_URL=nats://127.0.0.1:$NATS_PORT
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
export LLM_BASE_URL=http://127.0.0.1:$LLM_PORT/v1 LLM_MODEL=scripted WF_LOG_LEVEL=warn
start lightweight "$BIN/wf-lightweight" --threads 1
start heavy "$BIN/wf-heavy" --concurrency 64 --admin-listen "127.0.0.1:$HEAVY_ADMIN"
HEAVY_PID=$LAST_PID
wait_admin_ready "$HEAVY_ADMIN" heavy
start gateway "$BIN/wf-gateway" --listen "127.0.0.1:$GW_PORT"
wait_port "$GW_PORT" gateway
for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:$GW_PORT/ready" >/dev/null 2>&1 && break; sleep 0.1; done

rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %d MB  ", $1, $2 / 1024}' "/proc/$HEAVY_PID/status"; }
turn() {  # turn SESSION: one query; prints its status and error
  curl -sS -o "$RUN/$1.out" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"message\": \"an endless answer please\", \"session_id\": \"$1\"}" \
    "http://127.0.0.1:$GW_PORT/api/v1/query" >"$RUN/$1.code" || true
  echo "  $1: HTTP $(cat "$RUN/$1.code") $(head -c 200 "$RUN/$1.out")"
}
stored() {  # stored SESSION...
  for s in "$@"; do
    echo "  $s: redis MEMORY USAGE wf:hist:$s = $(redis-cli -p "$REDIS_PORT" MEMORY USAGE "wf:hist:$s") bytes," \
      "postgres assistant content = $(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
        "SELECT coalesce(max(length(content)), 0) FROM messages WHERE session_id = '$s' AND role = 'assistant'") characters"
  done
}

echo "# $ANSWER_MB MB answers; wf-heavy $BIN/wf-heavy, config $(cat "$RUN/config.json")"
echo "wf-heavy at rest:            $(rss)"
turn huge-1
echo "after one turn:              $(rss)"
stored huge-1
sessions=()
turns=()
for i in $(seq 1 "$CONCURRENT"); do
  sessions+=("huge-c$i")
  turn "huge-c$i" &
  turns+=($!)
done
for pid in "${turns[@]}"; do wait "$pid"; done
echo "after $CONCURRENT concurrent turns:   $(rss)"
stored "${sessions[@]}"

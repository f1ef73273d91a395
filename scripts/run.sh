#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: installs what is missing, builds, starts nats-server
# (JetStream), redis-server, PostgreSQL, the demo business API, the scripted LLM (unless
# LLM_BASE_URL is set), then wf-lightweight, wf-heavy and wf-gateway on :8000.
# Ctrl-C (or SIGTERM) stops everything it started. State lives in $WF_RUN_DIR (default .run/).
#
# Env: WF_LISTEN (gateway, default 0.0.0.0:8000), WF_CONFIG (default config/workflow_config.json),
#      LLM_BASE_URL / LLM_API_KEY / LLM_MODEL (a real OpenAI-compatible endpoint),
#      NATS_PORT (4222), REDIS_PORT (6390), PG_PORT (5442), LIGHTWEIGHT_REPLICAS (2),
#      NATS_GOMAXPROCS (nats-server's GOMAXPROCS; default 1 on a machine of 2 cores or fewer,
#      where it shares them with every other process here, else Go's default), SKIP_BUILD=1
#      to reuse build/ as it is.
set -euo pipefail
# Paths the caller gives are relative to the caller's directory, not the repository's.
if [[ -n "${WF_CONFIG:-}" ]]; then WF_CONFIG=$(realpath -m -- "$WF_CONFIG"); fi
if [[ -n "${WF_RUN_DIR:-}" ]]; then WF_RUN_DIR=$(realpath -m -- "$WF_RUN_DIR"); fi
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN_DIR=${WF_RUN_DIR:-$ROOT/.run}
BIN=$ROOT/build/bin
WF_LISTEN=${WF_LISTEN:-0.0.0.0:8000}
GATEWAY_PORT=${WF_LISTEN##*:}
export WF_CONFIG=${WF_CONFIG:-$ROOT/config/workflow_config.json}

if [[ -z "${SKIP_BUILD:-}" ]]; then
  ./scripts/install_deps.sh
  ./scripts/build.sh
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The first free port at or above $1 (a system redis or postgres may already hold the default).
free_port() {
  local p=$1
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}
wait_port() {  # wait_port PORT NAME LOGFILE
  for _ in $(seq 1 300); do
    if port_busy "$1"; then return 0; fi
    sleep 0.1
  done
  echo "run.sh: $2 did not start on port $1; its log ($3):" >&2
  tail -n 20 "$3" >&2 || true
  exit 1
}

for port in "$GATEWAY_PORT" 8081; do
  if port_busy "$port"; then
    echo "run.sh: port $port is already in use (gateway :$GATEWAY_PORT, demo API :8081)." >&2
    echo "        Stop what holds it, or set WF_LISTEN=0.0.0.0:OTHER for the gateway." >&2
    exit 1
  fi
done
PG_BIN=/usr/lib/postgresql/15/bin
# A PostgreSQL left running on this data directory by a run that was killed (kill -9, a closed
# terminal) holds its lock file, and a new start would fail: stop it first.
if runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" status >/dev/null 2>&1; then
  echo "run.sh: stopping the PostgreSQL a previous run left on $RUN_DIR/pg"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" -m fast stop >/dev/null
fi
NATS_PORT=$(free_port "${NATS_PORT:-4222}")
# shellcheck source=scripts/nats_defaults.sh
source "$ROOT/scripts/nats_defaults.sh"
if [[ -z "${NATS_GOMAXPROCS+set}" ]]; then NATS_GOMAXPROCS=$(default_nats_gomaxprocs); fi
if [[ -n "${NATS_GOMAXPROCS:-}" && ! "$NATS_GOMAXPROCS" =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: NATS_GOMAXPROCS must be a positive whole number or empty (Go's default)" >&2
  exit 2
fi
REDIS_PORT=$(free_port "${REDIS_PORT:-6390}")
PG_PORT=$(free_port "${PG_PORT:-5442}")
LLM_PORT=$(free_port 8090)

mkdir -p "$RUN_DIR/logs" "$RUN_DIR/nats"
chmod 755 "$RUN_DIR"
PIDS=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "run.sh: stopping..."
  # Reverse order: front door first, servers last.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "${PG_STARTED:-}" ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  echo "run.sh: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT   # exit runs the EXIT trap: cleanup, once
trap 'exit 143' TERM
start() {  # start NAME CMD...
  local name=$1
  shift
  # A session of its own: Ctrl-C reaches only this script, which stops the children in order
  # (front door first). Sharing the terminal's process group, every child got the SIGINT at
  # once, and their exits made `wait -n` below report "a process exited" and exit 1.
  setsid "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  PIDS+=($!)
}

echo "run.sh: nats-server (JetStream) on :$NATS_PORT"
start nats env ${NATS_GOMAXPROCS:+GOMAXPROCS=$NATS_GOMAXPROCS} \
  nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN_DIR/nats"
wait_port "$NATS_PORT" nats-server "$RUN_DIR/logs/nats.log"

echo "run.sh: redis-server on :$REDIS_PORT"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR" \
  --appendonly yes --save "" --daemonize no
wait_port "$REDIS_PORT" redis-server "$RUN_DIR/logs/redis.log"

echo "run.sh: PostgreSQL on :$PG_PORT"
if [[ ! -s "$RUN_DIR/pg/PG_VERSION" ]]; then
  mkdir -p "$RUN_DIR/pg"
  chown postgres:postgres "$RUN_DIR/pg"
  chmod 700 "$RUN_DIR/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$RUN_DIR/pg" -A trust -U postgres -E UTF8 \
    >"$RUN_DIR/logs/initdb.log" 2>&1
fi
mkdir -p "$RUN_DIR/pgsock"
chown postgres:postgres "$RUN_DIR/pgsock"
# pg_ctl writes its log as user postgres.
touch "$RUN_DIR/logs/postgres.log"
chown postgres:postgres "$RUN_DIR/logs/postgres.log"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" -l "$RUN_DIR/logs/postgres.log" \
  -o "-p $PG_PORT -k $RUN_DIR/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
PG_STARTED=1
wait_port "$PG_PORT" postgres "$RUN_DIR/logs/postgres.log"

echo "run.sh: demo business API on :8081"
start demo-api "$BIN/wf-demo-api" --listen 127.0.0.1:8081
wait_port 8081 wf-demo-api "$RUN_DIR/logs/demo-api.log"

if [[ -z "${LLM_BASE_URL:-}" ]]; then
  echo "run.sh: scripted LLM on :$LLM_PORT (set LLM_BASE_URL to use a real model)"
  start scripted-llm "$BIN/wf-scripted-llm" --listen "127.0.0.1:$LLM_PORT" \
    --rules "$ROOT/tests/fixtures/scripted_llm/demo_rules.json"
  wait_port "$LLM_PORT" wf-scripted-llm "$RUN_DIR/logs/scripted-llm.log"
  export LLM_BASE_URL="http://127.0.0.1:$LLM_PORT/v1"
  export LLM_MODEL=${LLM_MODEL:-scripted}
fi

export NATS_URL="nats://127.0.0.1:$NATS_PORT"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"

for i in $(seq 1 "${LIGHTWEIGHT_REPLICAS:-2}"); do
  echo "run.sh: wf-lightweight #$i"
  start "lightweight-$i" "$BIN/wf-lightweight" --threads 1
done
if [[ -x "$BIN/wf-heavy" ]]; then
  echo "run.sh: wf-heavy"
  start heavy "$BIN/wf-heavy"
fi
echo "run.sh: wf-gateway on $WF_LISTEN"
start gateway "$BIN/wf-gateway" --listen "$WF_LISTEN"
wait_port "$GATEWAY_PORT" wf-gateway "$RUN_DIR/logs/gateway.log"
ready=""
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$GATEWAY_PORT/ready" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.1
done
if [[ -z "$ready" ]]; then
  echo "run.sh: warning: /ready still says not ready after 10 s:" \
    "$(curl -sS "http://127.0.0.1:$GATEWAY_PORT/ready" 2>&1); see $RUN_DIR/logs" >&2
fi

cat <<MSG

Ready on http://127.0.0.1:$GATEWAY_PORT  (logs: $RUN_DIR/logs, Ctrl-C stops everything)

  curl -s localhost:$GATEWAY_PORT/api/v1/query -H 'Content-Type: application/json' \\
       -d '{"message":"check order 1234","session_id":"demo-1"}'
  curl -sN localhost:$GATEWAY_PORT/api/v1/query/stream -H 'Content-Type: application/json' \\
       -d '{"message":"What is the weather in Paris?","session_id":"demo-1"}'
  curl -s localhost:$GATEWAY_PORT/api/v1/session/demo-1

MSG
# Exit (and stop everything) when any child dies; otherwise wait for Ctrl-C.
wait -n "${PIDS[@]}" || true
echo "run.sh: a process exited; see $RUN_DIR/logs" >&2
exit 1

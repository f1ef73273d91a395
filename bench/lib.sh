# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run).

# N distinct free local TCP ports, space-separated: bound all at once, so no two are the same
# (one bind-and-close per port lets the kernel hand out a port twice, and a server then finds
# its port taken, or a client talks to the wrong server).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# CPU time of process $1 so far, in clock ticks (utime + stime; the name field has no spaces);
# 0 once it is gone.
# shellcheck disable=SC2034  # read by the scripts that source this file
TICK_HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Context switches (voluntary + involuntary) of every thread of a process so far: each one is a
# sleep and a wake-up, which on a VM whose idle vCPUs halt costs far more than the work between.
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {n += $2} END {print n + 0}'
}

# How fast the machine is right now (bench/calibrate): CPU speed and the wake-up round trip on
# one vCPU and across two. Printed before and after a run, so figures of different hours can be
# compared; prints a note instead when the tool is not built (cmake --build build --target
# bench_calibrate).
calibrate() {
  local tool=$ROOT/build/bin/bench_calibrate
  if [[ -x "$tool" ]]; then "$tool" --trips 1000; else echo "calibration: bench_calibrate not built"; fi
}

# shellcheck source=scripts/nats_defaults.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/nats_defaults.sh"

# The command prefix nats-server runs under, as scripts/run.sh starts it (GOMAXPROCS from
# default_nats_gomaxprocs). NATS_ENV overrides it ("env" for Go's default everywhere).
nats_env() {
  if [[ -n "${NATS_ENV+set}" ]]; then
    echo "${NATS_ENV:-env}"
    return
  fi
  local procs
  procs=$(default_nats_gomaxprocs)
  echo "env${procs:+ GOMAXPROCS=$procs}"
}

# --- A stack of processes in a run directory ($RUN, made by the script), each logging to
# $RUN/NAME.log and listed in PIDS. The script calls bench_stack_init after setting RUN and
# PG_BIN; the EXIT trap stops the processes (newest first), PostgreSQL if PG_STARTED is set,
# and removes $RUN.
bench_stack_init() {
  PIDS=()
  PG_STARTED=
  LAST_PID=
  trap bench_stack_cleanup INT TERM EXIT
}
bench_stack_cleanup() {
  trap - INT TERM EXIT
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$PG_STARTED" ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$RUN/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$RUN"
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # wait_port PORT NAME
  for _ in $(seq 1 600); do port_busy "$1" && return 0; sleep 0.1; done
  echo "${0##*/}: $2 did not open port $1; log:" >&2; tail -n 20 "$RUN/$2.log" >&2 || true; exit 1
}
# A worker's admin port is bound before it connects: ready is its /ready answering 200.
wait_admin_ready() {  # wait_admin_ready ADMIN_PORT NAME
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/ready" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "${0##*/}: $2 not ready on port $1; log:" >&2; tail -n 20 "$RUN/$2.log" >&2 || true; exit 1
}
start() {  # start NAME CMD...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

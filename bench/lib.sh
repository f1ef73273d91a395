# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run).

# A free local TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU time of process $1 so far, in clock ticks (utime + stime; the name field has no spaces);
# 0 once it is gone.
# shellcheck disable=SC2034  # read by the scripts that source this file
TICK_HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# How fast the machine is right now (bench/calibrate): CPU speed and the wake-up round trip on
# one vCPU and across two. Printed before and after a run, so figures of different hours can be
# compared; prints a note instead when the tool is not built (cmake --build build --target
# bench_calibrate).
calibrate() {
  local tool=$ROOT/build/bin/bench_calibrate
  if [[ -x "$tool" ]]; then "$tool" --trips 1000; else echo "calibration: bench_calibrate not built"; fi
}

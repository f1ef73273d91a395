# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run).

# A free local TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU time of process $1 so far, in clock ticks (utime + stime; the name field has no spaces);
# 0 once it is gone.
# shellcheck disable=SC2034  # read by the scripts that source this file
TICK_HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

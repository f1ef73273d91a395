#!/usr/bin/env bash
# ROUND_HOOK for bench/agent_path.sh: prints wf-heavy's RSS, makes it call malloc_trim(0) through
# gdb (returns the heap glibc keeps but nothing uses), prints its RSS again. What remains is what
# is really allocated. Needs gdb and ptrace rights on HEAVY_PID.
set -euo pipefail
rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$HEAVY_PID/status"; }
before=$(rss)
gdb -p "$HEAVY_PID" -batch -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1
echo "malloc_trim(0): wf-heavy RSS $before -> $(rss)"

# shellcheck shell=bash
# How scripts/run.sh starts nats-server, shared with the benchmarks (sourced, not run).

# nats-server's GOMAXPROCS for the one-machine stack: 1 on a machine of 2 cores or fewer, where
# it shares them with every other process of the stack (it then spends 20-30 % less CPU per
# message: bench/flow/RESULTS.md, session 14); empty (Go's default) otherwise.
default_nats_gomaxprocs() {
  if (($(nproc) <= 2)); then echo 1; fi
}

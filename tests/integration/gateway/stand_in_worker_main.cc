// Runs the gateway tests' stand-in lightweight worker on its own, for benchmarks:
//   gateway_stand_in_worker nats://127.0.0.1:4222
// It answers every query with a flow-style `final` (see stand_in_worker.h) until SIGINT/SIGTERM.
#include <pthread.h>

#include <csignal>
#include <cstdio>

#include "stand_in_worker.h"

int main(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const std::string url = argc > 1 ? argv[1] : "nats://127.0.0.1:4222";
  try {
    wf::testing::StandInWorker worker(url, /*sessions=*/true, /*record=*/false);
    std::fprintf(stderr, "stand-in worker serving wf.query on %s\n", url.c_str());
    int sig = 0;
    sigwait(&signals, &sig);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stand-in worker: %s\n", e.what());
    return 1;
  }
  return 0;
}

// Throughput and CPU cost of HttpClient against a local wf-demo-api, at a fixed concurrency.
//
//   bench/http_client/run.sh                       (starts wf-demo-api on a free port, runs all)
//   build/bin/bench_http_client --url http://127.0.0.1:PORT/api/orders/1234
//       [--requests 20000] [--concurrency 1,64] [--mode chained|foreign]
//
// mode "chained": each completion callback sends the next request (on the client's I/O thread).
// mode "foreign": the main thread sends every request and learns of completions through a
// semaphore, as a NATS callback thread would (one cross-thread hand-off per request each way).
// Figures: requests/s (wall clock) and CPU time (user + system, getrusage of this whole process,
// so the I/O thread counts) per request. The server's CPU is not included.

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <semaphore>
#include <sstream>
#include <string>
#include <vector>

#include "http_client/http_client.h"

namespace {

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct Figures {
  int ok = 0;
  int failed = 0;
  double wall_s = 0;
  double cpu_s = 0;
};

/// Figures of a run that started at `start` / `cpu_start` and has just finished.
Figures Collect(std::chrono::steady_clock::time_point start, double cpu_start, int ok,
                int failed) {
  Figures f;
  f.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  f.cpu_s = CpuSeconds() - cpu_start;
  f.ok = ok;
  f.failed = failed;
  return f;
}

/// Keeps `concurrency` requests in flight until `total` completed; each completion sends the next.
Figures RunChained(wf::HttpClient& client, const wf::HttpRequest& request, int total,
                   int concurrency) {
  std::atomic<int> sent{0};
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::atomic<int> done{0};
  std::promise<void> finished;
  std::function<void()> send_one;
  send_one = [&] {
    if (sent.fetch_add(1) >= total) return;
    client.Send(request, [&](wf::Result<wf::HttpResponse> result) {
      (result.ok() && result->status == 200 ? ok : failed).fetch_add(1);
      send_one();
      if (done.fetch_add(1) + 1 == total) finished.set_value();
    });
  };
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = CpuSeconds();
  for (int i = 0; i < concurrency; ++i) send_one();
  finished.get_future().wait();
  return Collect(start, cpu_start, ok.load(), failed.load());
}

/// The main thread sends every request; completions hand a slot back through a semaphore.
Figures RunForeign(wf::HttpClient& client, const wf::HttpRequest& request, int total,
                   int concurrency) {
  std::counting_semaphore<> slots(concurrency);
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::atomic<int> done{0};
  std::promise<void> finished;
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = CpuSeconds();
  for (int i = 0; i < total; ++i) {
    slots.acquire();
    client.Send(request, [&](wf::Result<wf::HttpResponse> result) {
      (result.ok() && result->status == 200 ? ok : failed).fetch_add(1);
      if (done.fetch_add(1) + 1 == total) finished.set_value();
      slots.release();
    });
  }
  finished.get_future().wait();
  return Collect(start, cpu_start, ok.load(), failed.load());
}

int Usage() {
  std::fprintf(stderr,
               "usage: bench_http_client --url URL [--requests N] [--concurrency 1,64] "
               "[--mode chained|foreign]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url;
  int requests = 20000;
  std::vector<int> concurrencies = {1, 64};
  std::string mode = "chained";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (value == nullptr) return Usage();
    if (arg == "--url") {
      url = value;
    } else if (arg == "--requests") {
      requests = std::atoi(value);
    } else if (arg == "--concurrency") {
      concurrencies.clear();
      std::stringstream list(value);
      for (std::string item; std::getline(list, item, ',');)
        concurrencies.push_back(std::stoi(item));
    } else if (arg == "--mode") {
      mode = value;
    } else {
      return Usage();
    }
    ++i;
  }
  if (url.empty() || requests <= 0 || (mode != "chained" && mode != "foreign")) return Usage();

  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::printf("# bench_http_client host=%s cpus=%ld url=%s requests=%d mode=%s\n", host,
              sysconf(_SC_NPROCESSORS_ONLN), url.c_str(), requests, mode.c_str());
  wf::HttpRequest request;
  request.url = url;
  for (int concurrency : concurrencies) {
    wf::HttpClient client;
    // Warm-up: open the connections, fill the easy-handle pool.
    (mode == "chained" ? RunChained : RunForeign)(client, request, std::max(concurrency * 4, 200),
                                                  concurrency);
    Figures f =
        (mode == "chained" ? RunChained : RunForeign)(client, request, requests, concurrency);
    std::printf(
        "mode=%s concurrency=%d requests=%d ok=%d failed=%d wall_s=%.3f req_per_s=%.0f "
        "cpu_us_per_req=%.2f connections=%llu\n",
        mode.c_str(), concurrency, requests, f.ok, f.failed, f.wall_s, requests / f.wall_s,
        f.cpu_s * 1e6 / requests, static_cast<unsigned long long>(client.ConnectionsOpened()));
    std::fflush(stdout);
  }
  return 0;
}

// bench_calibrate: measures how fast this machine is at the moment, so that benchmark figures
// taken at different times can be compared. On a shared VM the same binaries vary by up to 3x
// from one hour to the next; these two numbers say which kind of hour a run was taken in.
//
//   cpu   CPU time to hash 1 MiB (FNV-1a, one byte at a time: dependent integer work with no
//         memory traffic beyond L1), best of several rounds: the VM's compute speed.
//   wake  round trip of one byte between two processes over pipes, each blocking in read(): the
//         cost of waking a sleeping process, which every hop of the flow and agent paths pays
//         (two wake-ups per round trip). Measured with both processes on vCPU 0 and with one on
//         vCPU 0 and one on vCPU 1 (where the scheduler spreads a busy pipeline; on a VM that
//         does not poll before halting, this is where an inter-processor interrupt and an idle
//         vCPU's exit cost most). p50 of the trips.
//
// Output: one line, `calibration: cpu X ns/KiB, wake round trip same vCPU Y us, across vCPUs Z us`.
// Usage: bench_calibrate [--trips N] (default 2000)

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

double ThreadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// Best-of-rounds CPU nanoseconds per KiB of FNV-1a.
double CpuNsPerKiB() {
  std::vector<uint8_t> buffer(1 << 20);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<uint8_t>(i * 131 + 7);
  double best = 1e18;
  volatile uint64_t sink = 0;
  for (int round = 0; round < 7; ++round) {
    const double start = ThreadCpuNs();
    uint64_t hash = 1469598103934665603ULL;
    for (uint8_t byte : buffer) hash = (hash ^ byte) * 1099511628211ULL;
    sink = sink + hash;
    best = std::min(best, ThreadCpuNs() - start);
  }
  return best / 1024.0;
}

bool WriteByte(int fd) {
  const char byte = 'x';
  for (;;) {
    ssize_t n = write(fd, &byte, 1);
    if (n == 1) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

bool ReadByte(int fd) {
  char byte = 0;
  for (;;) {
    ssize_t n = read(fd, &byte, 1);
    if (n == 1) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

// Pins the calling process to one CPU; false if that CPU is not available.
bool PinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof(set), &set) == 0;
}

// Round-trip times in microseconds between this process (on parent_cpu) and a forked echo child
// (on child_cpu), sorted. The caller's affinity is restored afterwards.
std::vector<double> WakeRoundTrips(int trips, int parent_cpu, int child_cpu) {
  cpu_set_t saved;
  sched_getaffinity(0, sizeof(saved), &saved);
  int to_child[2];
  int to_parent[2];
  if (pipe(to_child) != 0 || pipe(to_parent) != 0) {
    std::perror("bench_calibrate: pipe");
    std::exit(1);
  }
  const pid_t child = fork();
  if (child < 0) {
    std::perror("bench_calibrate: fork");
    std::exit(1);
  }
  if (child == 0) {
    if (!PinTo(child_cpu)) _exit(3);
    close(to_child[1]);
    close(to_parent[0]);
    while (ReadByte(to_child[0]) && WriteByte(to_parent[1])) {
    }
    _exit(0);
  }
  close(to_child[0]);
  close(to_parent[1]);
  PinTo(parent_cpu);
  std::vector<double> times;
  times.reserve(static_cast<size_t>(trips));
  for (int i = 0; i < trips + 100; ++i) {
    // A pause between trips lets both processes go idle, as a request at c=1 finds them.
    usleep(200);
    const auto start = std::chrono::steady_clock::now();
    if (!WriteByte(to_child[1]) || !ReadByte(to_parent[0])) {
      std::fprintf(stderr, "bench_calibrate: echo child stopped\n");
      std::exit(1);
    }
    const auto end = std::chrono::steady_clock::now();
    if (i >= 100) {  // the first trips warm up both processes
      times.push_back(std::chrono::duration<double, std::micro>(end - start).count());
    }
  }
  close(to_child[1]);
  close(to_parent[0]);
  waitpid(child, nullptr, 0);
  sched_setaffinity(0, sizeof(saved), &saved);
  std::sort(times.begin(), times.end());
  return times;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t index = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1));
  return sorted[index];
}

}  // namespace

int main(int argc, char** argv) {
  int trips = 2000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--trips" && i + 1 < argc) {
      trips = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_calibrate [--trips N]\n");
      return 2;
    }
  }
  if (trips < 10 || trips > 1000000) {
    std::fprintf(stderr, "bench_calibrate: --trips must be 10..1000000\n");
    return 2;
  }
  const double cpu = CpuNsPerKiB();
  const std::vector<double> same = WakeRoundTrips(trips, 0, 0);
  std::printf("calibration: cpu %.0f ns/KiB, wake round trip same vCPU %.1f us", cpu,
              Percentile(same, 50));
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_ISSET(1, &allowed)) {
    std::printf(", across vCPUs %.1f us", Percentile(WakeRoundTrips(trips, 0, 1), 50));
  }
  std::printf(" (p50 of %d trips each)\n", trips);
  return 0;
}

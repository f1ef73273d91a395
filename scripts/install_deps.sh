#!/usr/bin/env bash
# Installs, with apt, every Debian 12 package the project needs to build, test and run.
# Idempotent: packages already installed are skipped and apt is not touched at all when no
# required package is missing (optional ones are tried only alongside a required install).
# Needs root (or sudo) only when something must be installed.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake pkg-config git ca-certificates curl
  # libraries
  libnats-dev libpistache-dev libre2-dev libhiredis-dev libpqxx-dev libspdlog-dev
  libprotobuf-dev protobuf-compiler libcurl4-openssl-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # tcmalloc, the executables' allocator (CMake WF_ALLOCATOR)
  libgoogle-perftools-dev
  # servers used by run.sh and the integration tests
  nats-server redis-server postgresql-15 postgresql-client-15
  # benchmarks
  wrk hyperfine
  # static validation of the deployment files and the graceful-shutdown tests
  docker-compose python3 python3-yaml iproute2 procps
)
# Best effort: kubectl renders and dry-runs k8s/ in the deploy tests (they report SKIP without it).
# Debian's own kubernetes-client (1.20) is too old for the kustomization and is not used.
OPTIONAL=(kubectl)
if [[ -n "${WF_EXTRA_PACKAGES:-}" ]]; then
  read -r -a extra <<<"${WF_EXTRA_PACKAGES}"
  PACKAGES+=("${extra[@]}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

optional_missing=()
for p in "${OPTIONAL[@]}"; do
  if ! command -v "$p" >/dev/null 2>&1; then optional_missing+=("$p"); fi
done

if ((${#missing[@]} == 0)); then
  # Optional packages never make apt run on their own: Debian 12 has no kubectl package, so
  # trying on every run would touch the network (and fail offline) for nothing.
  echo "install_deps: all ${#PACKAGES[@]} packages present${optional_missing[*]:+ (optional, not installed: ${optional_missing[*]}; the checks that need it are skipped)}"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
for p in "${optional_missing[@]}"; do
  $SUDO apt-get install -y -q --no-install-recommends "$p" ||
    echo "install_deps: optional $p not available; the checks that need it will be skipped"
done

#!/usr/bin/env bash
# Configures and builds everything into build/ (executables in build/bin).
# Env: BUILD_DIR (default build), BUILD_TYPE (default RelWithDebInfo), JOBS (default nproc),
#      CMAKE_ARGS (extra configure flags, e.g. -DWF_SANITIZE=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
JOBS=${JOBS:-$(nproc)}
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"

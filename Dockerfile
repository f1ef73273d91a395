# syntax=docker/dockerfile:1
#
# One image for every binary of the pipeline (wf-gateway, wf-lightweight, wf-heavy, and the demo
# pair wf-demo-api and wf-scripted-llm); the container command picks which one runs. One build,
# one set of packages to patch, layers shared by every pod on a node. See docs/deploy.md.
#
#   docker build -t wf-pipeline:dev .
#   docker run --rm wf-pipeline:dev wf-gateway --help
#
# scripts/check_runtime_deps.sh keeps the runtime package list equal to what the binaries link
# (readelf/ldd of build/bin/wf-*), and the build package list covering what CMake finds; the
# deploy_static_test runs it.

ARG DEBIAN_IMAGE=debian:12-slim

# ---------------------------------------------------------------------------------------------
# Build stage: the same CMake build as on a developer machine, without tests and benchmarks.
FROM ${DEBIAN_IMAGE} AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      cmake \
      g++ \
      make \
      pkgconf \
      libcurl4-openssl-dev \
      libfmt-dev \
      libgoogle-perftools-dev \
      libhiredis-dev \
      libnats-dev \
      libpistache-dev \
      libpqxx-dev \
      libprotobuf-dev \
      libre2-dev \
      libspdlog-dev \
      nlohmann-json3-dev \
      protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads (the top-level CMakeLists.txt adds these directories).
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY schemas/ schemas/
COPY common/ common/
COPY gateway/ gateway/
COPY workers/ workers/
COPY tests/ tests/

ARG BUILD_JOBS=2
# RelWithDebInfo: the build type scripts/build.sh makes, the tests run and the benchmarks
# measure (checked by tests/integration/deploy); strip then drops the debug information.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWF_BUILD_TESTS=OFF -DWF_BUILD_BENCH=OFF \
 && cmake --build build -j"${BUILD_JOBS}" \
      --target wf-gateway wf-lightweight wf-heavy wf-demo-api wf-scripted-llm \
 && strip --strip-unneeded \
      build/bin/wf-gateway build/bin/wf-lightweight build/bin/wf-heavy \
      build/bin/wf-demo-api build/bin/wf-scripted-llm

# ---------------------------------------------------------------------------------------------
# Runtime stage: the binaries, the shared libraries they link, CA certificates, a non-root user.
FROM ${DEBIAN_IMAGE} AS runtime

# Library packages: exactly the packages of the DT_NEEDED libraries of build/bin/wf-*
# (checked by scripts/check_runtime_deps.sh); apt brings their own dependencies.
# ca-certificates: HTTPS to the LLM provider and business APIs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      libc6 \
      libcurl4 \
      libgcc-s1 \
      libhiredis0.14 \
      libfmt9 \
      libnats3.4 \
      libpistache0 \
      libpqxx-6.4 \
      libprotobuf32 \
      libre2-9 \
      libspdlog1.10 \
      libstdc++6 \
      libtcmalloc-minimal4 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 wf \
 && useradd --uid 10001 --gid wf --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin wf

COPY --from=build /src/build/bin/wf-gateway /src/build/bin/wf-lightweight \
     /src/build/bin/wf-heavy /src/build/bin/wf-demo-api /src/build/bin/wf-scripted-llm \
     /usr/local/bin/

# The default configuration; docker-compose and Kubernetes mount theirs over /etc/wf read-only.
COPY config/ /etc/wf/
ENV WF_CONFIG=/etc/wf/workflow_config.json

USER 10001:10001
WORKDIR /tmp

# 8000 gateway HTTP/SSE, 9090 worker admin (/health, /ready, /metrics),
# 8081 demo business API, 8090 scripted LLM.
EXPOSE 8000 9090 8081 8090

# Whichever binary runs, it serves GET /health on its conventional port (gateway 8000, workers
# 9090 with --admin-listen, demo API 8081, scripted LLM 8090): the first port that answers 200
# decides. No curl in the image: bash's /dev/tcp speaks the one request needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["bash", "-c", "for p in 8000 9090 8081 8090; do (exec 3<>/dev/tcp/127.0.0.1/$p && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200') 2>/dev/null && exit 0; done; exit 1"]

# The binaries handle SIGTERM themselves (graceful drain) and start no children, so they run as
# PID 1 without an init.
CMD ["wf-gateway"]

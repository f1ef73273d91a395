#!/usr/bin/env bash
# Checks the Dockerfile against the binaries this machine builds, without a Docker daemon:
#   runtime stage  its apt package list equals the Debian packages of the shared libraries that
#                  build/bin/wf-* link directly (readelf NEEDED, resolved by ldd, owned per
#                  dpkg -S), plus only the justified extras below; nothing is "not found".
#   build stage    it installs the package of every library, header set and tool that CMake found
#                  for this build (CMakeCache.txt), tests and benchmarks excepted (the image builds
#                  with WF_BUILD_TESTS=OFF WF_BUILD_BENCH=OFF); every package it names exists.
#   both           the cmake --target list, the strip list and the runtime COPY list name the same
#                  binaries; every COPY source exists and is not in .dockerignore; every directory
#                  the top-level CMakeLists.txt always adds is copied; bases are Debian 12; the
#                  runtime runs as a numeric non-root USER and has a HEALTHCHECK.
#
# Usage: scripts/check_runtime_deps.sh [BUILD_DIR] [DOCKERFILE]
#   BUILD_DIR   a configured and built CMake build dir (default: build); binaries in BUILD_DIR/bin
#   DOCKERFILE  default: the repository's Dockerfile
# Exit 0 when every check passes, 1 when one fails (each failure printed as "FAIL: ..."),
# 2 on usage errors. Needs: bash, readelf (binutils), ldd, dpkg.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-$repo/build}"
dockerfile="${2:-$repo/Dockerfile}"
bin_dir="$build_dir/bin"

# Runtime packages that are no library of a binary, and why they are in the image.
declare -A kExtraRuntime=(
  [ca-certificates]="HTTPS to the LLM provider and to business APIs"
)
# Build packages that CMakeCache.txt cannot show (compilers and build tools), and why.
declare -A kExtraBuild=(
  [ca-certificates]="TLS roots during the build"
  [cmake]="the build system"
  [g++]="the compiler"
  [make]="CMake's generator"
)
# Packages CMake finds only for tests and benchmarks, which the image does not build.
kTestOnly='^(googletest|libgtest-dev|libgmock-dev|libbenchmark-dev|libbenchmark1debian|libbenchmark-tools)$'

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }

[[ -f "$dockerfile" ]] || { echo "usage: $0 [BUILD_DIR] [DOCKERFILE] (no $dockerfile)"; exit 2; }
[[ -d "$bin_dir" ]] || { echo "usage: $0 [BUILD_DIR] [DOCKERFILE] (no $bin_dir)"; exit 2; }
for tool in readelf ldd dpkg; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool"; exit 2; }
done

# The Dockerfile as logical instructions: continuations joined, comment lines dropped, one
# instruction per line, prefixed with its stage name ("build|RUN apt-get ...").
instructions() {
  awk '
    /^[[:space:]]*#/ { next }
    {
      line = $0
      cont = sub(/\\[[:space:]]*$/, "", line)
      buf = buf line " "
      if (cont) next
      gsub(/[[:space:]]+/, " ", buf); sub(/^ /, "", buf); sub(/ $/, "", buf)
      if (buf != "") {
        if (toupper(buf) ~ /^FROM /) {
          n = split(buf, w, " "); stage = (n >= 4 && toupper(w[n-1]) == "AS") ? w[n] : "stage" NR
        }
        print stage "|" buf
      }
      buf = ""
    }' "$dockerfile"
}

# Packages installed by `apt-get install` in a stage's RUN instructions.
apt_packages() {
  local stage="$1"
  instructions | awk -F'|' -v s="$stage" '$1 == s && $2 ~ /^RUN / { print $2 }' |
    awk '{
      for (i = 1; i <= NF; i++) {
        if ($i == "install") { on = 1; continue }
        if ($i == "&&" || $i == ";" || $i == "|") on = 0
        if (on && $i !~ /^-/) print $i
      }
    }' | sort -u
}

# The Debian package owning a file; tries the /usr-merged twins of the path too.
owner_of() {
  local path="$1" real candidates c out
  real="$(readlink -f "$path" 2>/dev/null || echo "$path")"
  candidates=("$path" "$real")
  for c in "$path" "$real"; do
    case "$c" in
      /usr/lib/*) candidates+=("${c#/usr}") ;;
      /lib/*) candidates+=("/usr$c") ;;
    esac
  done
  for c in "${candidates[@]}"; do
    if out="$(dpkg -S "$c" 2>/dev/null | head -n1)"; then
      # "pkg:amd64: /path", or "a, b: /dir" for a directory several packages share: that says
      # nothing about who needs it, so it counts as unowned.
      out="${out%%: /*}"
      [[ "$out" == *", "* ]] && return 1
      echo "${out%%:*}"
      return 0
    fi
  done
  return 1
}

mapfile -t runtime_pkgs < <(apt_packages runtime)
mapfile -t build_pkgs < <(apt_packages build)
[[ ${#runtime_pkgs[@]} -gt 0 ]] || fail "no 'apt-get install' found in the stage named runtime"
[[ ${#build_pkgs[@]} -gt 0 ]] || fail "no 'apt-get install' found in the stage named build"

# --- binaries: cmake targets, strip list, COPY list -------------------------------------------
mapfile -t target_bins < <(instructions | awk -F'|' '$1 == "build" && $2 ~ /^RUN / { print $2 }' |
  awk '{ for (i = 1; i <= NF; i++) { if ($i == "--target") on = 1; else if ($i ~ /^(&&|;)$/) on = 0; else if (on) print $i } }' | sort -u)
mapfile -t strip_bins < <(instructions | awk -F'|' '$1 == "build" && $2 ~ /^RUN / { print $2 }' |
  grep -o 'build/bin/wf-[A-Za-z0-9_-]*' | sed 's#build/bin/##' | sort -u)
mapfile -t copied_bins < <(instructions | awk -F'|' '$1 == "runtime" && $2 ~ /^COPY --from=build / { print $2 }' |
  grep -o '/build/bin/[A-Za-z0-9_-]*' | sed 's#/build/bin/##' | sort -u)
if [[ ${#copied_bins[@]} -eq 0 ]]; then
  fail "the runtime stage copies no binary from build/bin"
elif [[ "${target_bins[*]}" != "${copied_bins[*]}" || "${strip_bins[*]}" != "${copied_bins[*]}" ]]; then
  fail "binaries differ: cmake --target {${target_bins[*]}} strip {${strip_bins[*]}} COPY {${copied_bins[*]}}"
else
  ok "build, strip and COPY name the same binaries: ${copied_bins[*]}"
fi

# --- runtime: NEEDED libraries -> packages --------------------------------------------------
declare -A needed_pkgs=()
missing_bins=0
for bin in "${copied_bins[@]}"; do
  path="$bin_dir/$bin"
  if [[ ! -x "$path" ]]; then
    fail "$path is not built (build the image's targets first)"
    missing_bins=1
    continue
  fi
  ldd_out="$(ldd "$path")"
  if grep -q 'not found' <<<"$ldd_out"; then
    fail "$bin: ldd reports missing libraries: $(grep 'not found' <<<"$ldd_out" | tr -s ' \t' ' ')"
  fi
  while read -r soname; do
    lib="$(awk -v s="$soname" '$1 == s && $2 == "=>" { print $3 }' <<<"$ldd_out")"
    if [[ -z "$lib" ]]; then
      fail "$bin: ldd does not resolve $soname"
      continue
    fi
    if pkg="$(owner_of "$lib")"; then
      needed_pkgs["$pkg"]+="$bin:$soname "
    else
      fail "$bin: $lib ($soname) belongs to no Debian package (built by hand?)"
    fi
  done < <(readelf -d "$path" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p')
done

if [[ $missing_bins -eq 0 ]]; then
  declare -A in_image=()
  for p in "${runtime_pkgs[@]}"; do in_image["$p"]=1; done
  for p in $(printf '%s\n' "${!needed_pkgs[@]}" | sort); do
    if [[ -n "${in_image[$p]:-}" ]]; then
      ok "runtime installs $p (for ${needed_pkgs[$p]% })"
    else
      fail "runtime stage lacks $p, needed by ${needed_pkgs[$p]% }"
    fi
  done
  for p in "${runtime_pkgs[@]}"; do
    if [[ -z "${needed_pkgs[$p]:-}" ]]; then
      if [[ -n "${kExtraRuntime[$p]:-}" ]]; then
        ok "runtime installs $p (${kExtraRuntime[$p]})"
      else
        fail "runtime stage installs $p, which no binary links and no justification names"
      fi
    fi
  done
fi

# --- build: what CMake found -> packages -----------------------------------------------------
cache="$build_dir/CMakeCache.txt"
if [[ ! -f "$cache" ]]; then
  fail "$cache missing: cannot check the build stage"
else
  declare -A cmake_pkgs=()
  while IFS='=' read -r key value; do
    [[ "$value" == /usr/* && -e "$value" ]] || continue
    if pkg="$(owner_of "$value")"; then
      [[ "$pkg" =~ $kTestOnly ]] && continue
      cmake_pkgs["$pkg"]+="${key%%:*} "
    fi
  done < <(grep -E '^([A-Za-z0-9_]+_(DIR|INCLUDE_DIR|LIBRARY|LIBRARY_RELEASE|EXECUTABLE)|pkgcfg_lib_[A-Za-z0-9_]+|PKG_CONFIG_EXECUTABLE|CMAKE_COMMAND):[A-Z]+=' "$cache" |
    grep -v -E '^(CMAKE_(AR|RANLIB|LINKER|NM|OBJCOPY|OBJDUMP|STRIP|READELF|ADDR2LINE|DLLTOOL|MAKE_PROGRAM|C_COMPILER|CXX_COMPILER)[A-Z_]*):')
  declare -A in_build=()
  for p in "${build_pkgs[@]}"; do in_build["$p"]=1; done
  for p in $(printf '%s\n' "${!cmake_pkgs[@]}" | sort); do
    if [[ -n "${in_build[$p]:-}" ]]; then
      ok "build installs $p (CMake: ${cmake_pkgs[$p]% })"
    else
      fail "build stage lacks $p (CMake found ${cmake_pkgs[$p]% } there)"
    fi
  done
  for p in "${build_pkgs[@]}"; do
    if [[ -z "${cmake_pkgs[$p]:-}" && -z "${kExtraBuild[$p]:-}" ]]; then
      fail "build stage installs $p, which CMake does not use and no justification names"
    fi
  done
fi
for p in "${build_pkgs[@]}" "${runtime_pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' &&
     ! apt-cache show "$p" >/dev/null 2>&1; then
    fail "package $p is neither installed here nor known to apt (misspelt, or not in Debian 12?)"
  fi
done

# --- stage shape ------------------------------------------------------------------------------
while IFS='|' read -r stage instr; do
  image="$(awk '{ print $2 }' <<<"$instr")"
  if [[ "$image" == '${DEBIAN_IMAGE}' ]]; then
    image="$(instructions | awk -F'|' '$2 ~ /^ARG DEBIAN_IMAGE=/ { sub(/^ARG DEBIAN_IMAGE=/, "", $2); print $2; exit }')"
  fi
  if [[ "$image" =~ ^(docker\.io/(library/)?)?debian:(12|bookworm)([.-].*)?(@sha256:[0-9a-f]+)?$ ]]; then
    ok "stage $stage is based on $image (Debian 12)"
  else
    fail "stage $stage is based on '$image', not Debian 12"
  fi
done < <(instructions | grep -E '^[^|]*\|FROM ')

user="$(instructions | awk -F'|' '$1 == "runtime" && $2 ~ /^USER / { u = $2 } END { sub(/^USER /, "", u); print u }')"
if [[ "$user" =~ ^[1-9][0-9]*(:[1-9][0-9]*)?$ ]]; then
  ok "runtime runs as USER $user (numeric, non-root: Kubernetes runAsNonRoot can verify it)"
else
  fail "runtime USER is '$user': want a numeric non-zero uid"
fi
if instructions | grep -q '^runtime|HEALTHCHECK '; then
  ok "runtime has a HEALTHCHECK"
else
  fail "runtime has no HEALTHCHECK"
fi

# COPY sources exist and survive .dockerignore; every always-added CMake subdirectory is copied.
ignored() {
  local top="${1%%/*}"
  [[ -f "$repo/.dockerignore" ]] && grep -v '^#' "$repo/.dockerignore" | grep -qx -- "$top"
}
declare -A copied_dirs=()
while read -r src; do
  src="${src%/}"
  if [[ ! -e "$repo/$src" ]]; then
    fail "COPY source '$src' does not exist in the repository"
  elif git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
       [[ -z "$(git -C "$repo" ls-files -- "$src" | head -n1)" ]]; then
    fail "COPY source '$src' has no file under version control (a fresh clone lacks it)"
  elif ignored "$src"; then
    fail "COPY source '$src' is excluded by .dockerignore"
  else
    ok "COPY source '$src' exists and is in the build context"
  fi
  copied_dirs["$src"]=1
done < <(instructions | awk -F'|' '$2 ~ /^COPY / && $2 !~ /--from=/ {
           n = split($2, w, " "); for (i = 2; i < n; i++) if (w[i] !~ /^--/) print w[i] }')
while read -r sub; do
  if [[ -n "${copied_dirs[$sub]:-}" ]]; then
    ok "CMake subdirectory $sub is copied into the build stage"
  else
    fail "CMake always adds '$sub' but the build stage does not COPY it"
  fi
done < <(awk '/^[[:space:]]*if\(/ { depth++ } /^[[:space:]]*endif\(/ { depth-- }
              depth == 0 && /^[[:space:]]*add_subdirectory\(/ { gsub(/.*\(|\).*/, ""); print }' \
         "$repo/CMakeLists.txt")

if [[ $failures -gt 0 ]]; then
  echo "check_runtime_deps: $failures check(s) failed"
  exit 1
fi
echo "check_runtime_deps: all checks passed"

#!/usr/bin/env bash
# Installs every Debian 12 package that Bifrost's build, tests and benchmarks need.
# Idempotent: when everything is present it prints nothing and exits 0.
set -euo pipefail

PKGS=(
  # toolchain
  build-essential cmake pkg-config
  # libraries (see README "Dependencies")
  libcaf-dev libuv1-dev capnproto libcapnp-dev libssl-dev
  libboost-test-dev libbenchmark-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
  libgoogle-perftools-dev
  # fuzzing / sanitizers / instruction counts (bench/cg_cluster)
  clang libclang-rt-14-dev valgrind
  # real peers used by tests and benchmarks
  memcached libmemcached-tools python3-pymemcache nutcracker
  # the TLS tests make their certificates with the openssl command
  openssl
  # the partition test (tests/integration/test_partition.py): ip and tc in network namespaces
  iproute2
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing ${missing[*]}"
[ "${BIFROST_APT_UPDATED:-}" = 1 ] || $SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts memcached/nutcracker as services on install; tests start their own on free ports.
for svc in memcached nutcracker; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done

#!/usr/bin/env bash
# Runs every check and test amihub has: formatting, clippy, unit tests (codec, config, backoff,
# protocol, simulator), and the integration scenarios (real binary, simulated PBXs, real
# WebSocket clients). Installs what a fresh Debian machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
command -v redis-server >/dev/null || need_apt+=(redis-server) # the cluster suite's Redis
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

echo "== browser test dependencies (node, chromium, playwright-core)"
bash integration/browser/setup.sh
echo "== AMI client libraries (panoramisk, asterisk-manager)"
bash integration/ami_clients/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test (release: the scenarios push real traffic)"
cargo test --release
bash integration/docker/smoke.sh # Docker image: build, demo, probes, compose (SKIPs where Docker cannot run)

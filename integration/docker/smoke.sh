#!/usr/bin/env bash
# Docker smoke test: builds docker/Dockerfile from this checkout, runs the demo the way
# docker/README.md documents it, and checks what the README promises — /livez, the dashboard and a
# WebSocket reachable through a port published on 127.0.0.1, uid 10001, a read-only root, no
# capabilities, a clean `docker stop` — then the same through docker/compose.yaml.
#
# Installs what it lacks (docker.io, docker-compose, debootstrap, curl), starts dockerd if none is
# running (and stops it again), makes the base images offline when no registry answers
# (base-images.sh) and keeps them, and BuildKit's cargo cache, for the next run. Removes every
# container it started. Where Docker truly cannot run (no root, dockerd cannot start) it prints a
# SKIP line and exits 0; AMIHUB_SKIP_DOCKER=1 skips it on purpose. Only loopback is published.
set -euo pipefail
cd "$(dirname "$0")/../.."

release=${DEBIAN_RELEASE:-bookworm}
image=amihub:latest # the name docker/compose.yaml uses
t0=$SECONDS

skip() {
  echo "SKIP: docker smoke test: $*"
  exit 0
}
fail() {
  echo "FAIL: docker smoke test: $*" >&2
  exit 1
}
step() { echo "== docker: $* (+$((SECONDS - t0))s)"; }

[ "${AMIHUB_SKIP_DOCKER:-0}" = 1 ] && skip "AMIHUB_SKIP_DOCKER=1"

# ---- tools ------------------------------------------------------------------------------------
# The host toolchain becomes the rust: base image when no registry has one (base-images.sh).
if [ -z "${AMIHUB_RUST_SYSROOT:-}" ] && command -v rustc >/dev/null; then
  AMIHUB_RUST_SYSROOT=$(rustc --print sysroot)
  export AMIHUB_RUST_SYSROOT
fi
if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null || skip "needs root (or passwordless sudo) to install and start Docker"
  exec sudo -n --preserve-env=AMIHUB_SKIP_DOCKER,AMIHUB_RUST_SYSROOT,DEBIAN_RELEASE,DEBIAN_MIRROR \
    bash "$PWD/integration/docker/smoke.sh" "$@"
fi
need_apt=()
# Debian's docker client (20.10) has BuildKit built in; a newer client without the buildx plugin
# (e.g. a bare /usr/local/bin/docker) refuses DOCKER_BUILDKIT=1, so /usr/bin/docker is preferred.
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null ||
    skip "apt-get install ${need_apt[*]} failed"
fi
docker=/usr/bin/docker
[ -x "$docker" ] || docker=$(command -v docker)
# docker-compose runs `docker build` from PATH: make it the same client.
bindir=$(mktemp -d)
ln -s "$docker" "$bindir/docker"
export PATH="$bindir:$PATH"
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1

# ---- daemon -----------------------------------------------------------------------------------
dockerd_pid=""
containers=()
compose_up=""
cleanup() {
  local rc=$?
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  if [ -n "$compose_up" ]; then
    docker-compose -p amihubsmoke -f docker/compose.yaml down -t 15 >/dev/null 2>&1 || true
  fi
  if [ -n "$dockerd_pid" ]; then
    echo "== docker: stopping the dockerd it started (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -rf "$bindir"
  exit "$rc"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || skip "no dockerd"
  log=/var/tmp/amihub-smoke-dockerd.log
  step "starting dockerd (log: $log)"
  dockerd >"$log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -5 "$log"; dockerd_pid=""; skip "dockerd exited (no privileges?)"; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -5 "$log"; skip "dockerd did not come up in 30 s"; }
fi

# ---- build ------------------------------------------------------------------------------------
step "base images for $release"
bash integration/docker/base-images.sh "$docker" "$release"
step "docker build -f docker/Dockerfile -t $image --build-arg DEBIAN_RELEASE=$release ."
b0=$SECONDS
build_log=/var/tmp/amihub-smoke-build.log
docker build --progress=plain -f docker/Dockerfile -t "$image" --build-arg DEBIAN_RELEASE="$release" . \
  >"$build_log" 2>&1 || { tail -40 "$build_log"; fail "docker build failed (log: $build_log)"; }
build_s=$((SECONDS - b0))
image_mb=$(($(docker image inspect -f '{{.Size}}' "$image") / 1000000))
bin_bytes=$(docker run --rm --entrypoint stat "$image" -c %s /usr/local/bin/amihub)
bin_mb=$((bin_bytes / 1000000))
echo "   built in ${build_s}s; image ${image_mb} MB; binary ${bin_mb} MB"
# With Cargo.toml's debug = 1 the binary is ~90 MB; stripped it is ~9 MB.
[ "$bin_mb" -lt 30 ] || fail "the binary in the image is ${bin_mb} MB: not stripped?"

# ---- probes -----------------------------------------------------------------------------------
# GET through the published port until it answers (the process needs a moment to bind), at most 30 s.
wait_http() {
  local url=$1 code=""
  for _ in $(seq 1 60); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.5
  done
  fail "$url answered '$code' for 30 s, not 200"
}
expect_http() { # url code [body-substring]
  local body code
  body=$(curl -s --max-time 5 -w '\n%{http_code}' "$1") || fail "GET $1: curl failed"
  code=${body##*$'\n'}
  [ "$code" = "$2" ] || fail "GET $1 answered $code, expected $2"
  [ -z "${3:-}" ] || [[ "$body" == *"$3"* ]] || fail "GET $1: no '$3' in the answer"
}
free_port() { # a loopback port nothing listens on
  local p
  for p in $(shuf -i 20000-40000 -n 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  fail "no free loopback port"
}
# A WebSocket handshake over bash's /dev/tcp with the Origin a browser on the host sends: 101 with
# the RFC 6455 accept for this key, then at least one text frame carrying an amihub envelope (the
# demo's PBXs talk all the time). With a second argument (a foreign Origin): 403.
expect_ws() {
  local port=$1 out
  out=$(
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nOrigin: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' "$port" "${2:-http://127.0.0.1:$port}" >&3
    timeout 5 head -c 2048 <&3 | tr -d '\000' || true
  )
  if [ -n "${2:-}" ]; then # a foreign page's Origin: refused
    [[ "$out" == "HTTP/1.1 403"* ]] || fail "WebSocket from Origin $2 was not refused: ${out%%$'\r'*}"
    return
  fi
  [[ "$out" == "HTTP/1.1 101"* ]] || fail "WebSocket upgrade on port $port: ${out%%$'\r'*}"
  [[ "$out" == *"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="* ]] || fail "WebSocket upgrade: wrong Sec-WebSocket-Accept"
  [[ "$out" == *'"server_id":'* ]] || fail "WebSocket: no amihub message within 5 s"
}
probe() { # port
  wait_http "http://127.0.0.1:$1/livez"
  expect_http "http://127.0.0.1:$1/readyz" 200
  expect_http "http://127.0.0.1:$1/" 200 "<html"
  expect_http "http://127.0.0.1:$1/api/v1/servers" 200 '"name"'
  expect_ws "$1"
  expect_ws "$1" "http://evil.example"
}

# ---- docker run: the command docker/README.md documents, hardened as it recommends ------------
c=amihub-smoke-$$
containers+=("$c")
# The browser's origin must be declared: inside the container amihub cannot know the host port.
port=$(free_port)
step "docker run $image --demo (read-only, no capabilities, 127.0.0.1 only)"
docker run -d --name "$c" --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges -p "127.0.0.1:$port:8000" \
  -e AMIHUB__HTTP__ALLOW_ANONYMOUS_REMOTE=true \
  -e AMIHUB__HTTP__ALLOWED_ORIGINS="http://127.0.0.1:$port,http://localhost:$port" \
  "$image" --demo >/dev/null
probe "$port"

status=$(docker exec "$c" cat /proc/1/status)
field() { sed -n "s/^$1:[[:space:]]*//p" <<<"$status" | tr -s '[:space:]' ' ' | sed 's/ $//'; }
[ "$(field Uid)" = "10001 10001 10001 10001" ] || fail "uid is '$(field Uid)', not 10001"
[ "$(field Gid)" = "10001 10001 10001 10001" ] || fail "gid is '$(field Gid)', not 10001"
for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
  [ "$(field "$cap")" = 0000000000000000 ] || fail "$cap is $(field "$cap"), not empty"
done
[ "$(field NoNewPrivs)" = 1 ] || fail "NoNewPrivs is not set"
[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c")" = true ] || fail "root is not read-only"
docker exec "$c" sh -c ': > /usr/share/amihub/probe' 2>/dev/null && fail "the root filesystem is writable"
docker logs "$c" 2>&1 | grep -q panicked && fail "amihub panicked: $(docker logs "$c" 2>&1 | tail -5)"

s0=$(date +%s%N)
docker stop -t 15 "$c" >/dev/null
stop_ms=$((($(date +%s%N) - s0) / 1000000))
code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
echo "   docker stop took ${stop_ms} ms, exit code $code"
[ "$code" = 0 ] || fail "exit code $code after docker stop: $(docker logs "$c" 2>&1 | tail -5)"
[ "$stop_ms" -lt 5000 ] || fail "docker stop took ${stop_ms} ms (SIGTERM not handled?)"
docker rm "$c" >/dev/null

# ---- docker compose: docker/compose.yaml as it is -----------------------------------------------
step "docker-compose -f docker/compose.yaml build + up"
# The build must come from BuildKit's cache (the same context as above): quick, and it proves that
# docker-compose 1.29 builds this Dockerfile with DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1.
compose=(docker-compose -p amihubsmoke -f docker/compose.yaml)
# A free port on the host's loopback for compose.yaml's "127.0.0.1:${AMIHUB_PORT:-8000}:8000".
export AMIHUB_PORT
AMIHUB_PORT=$(free_port)
compose_log=/var/tmp/amihub-smoke-compose.log
"${compose[@]}" build >"$compose_log" 2>&1 ||
  { tail -30 "$compose_log"; fail "docker-compose build failed (log: $compose_log)"; }
compose_up=1
"${compose[@]}" up -d 2>&1 | grep -v '^$' | sed 's/^/   /'
probe "$AMIHUB_PORT"
s0=$(date +%s%N)
"${compose[@]}" stop -t 15 >/dev/null 2>&1
stop_ms=$((($(date +%s%N) - s0) / 1000000))
cid=$("${compose[@]}" ps -q amihub)
code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
echo "   compose stop took ${stop_ms} ms, exit code $code"
[ "$code" = 0 ] || fail "compose service exit code $code after stop"
"${compose[@]}" down >/dev/null 2>&1
compose_up=""

echo "== docker: smoke test passed in $((SECONDS - t0))s (build ${build_s}s, image ${image_mb} MB, binary ${bin_mb} MB)"

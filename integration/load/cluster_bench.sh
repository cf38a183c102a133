#!/usr/bin/env bash
# Cluster path vs single node (README "Cluster", "What Redis costs"). With the neutral amibench
# binaries (fakeami, wsload), all on loopback:
#   single : fakeami -> amihub -> CLIENTS wsload clients
#   cluster: fakeami -> node a (owner) -> Redis stream -> node b -> CLIENTS wsload clients on b
# then one stream at full speed (fakeami --rate 0, one client on b) for events/s through one PBX
# stream, and what Redis holds and does per event (MEMORY USAGE, INFO commandstats).
# Prints one JSON line per run (wsload's summary plus label, load average) and the Redis figures.
#   integration/load/cluster_bench.sh            # CLIENTS=100 RATE=2000 DURATION=15 RUNS=1
set -euo pipefail
cd "$(dirname "$0")/../.."

BENCH=${AMIBENCH_BIN:-/tmp/amibench-target/release}
AMIHUB=${AMIHUB_BIN:-$PWD/target/release/amihub}
CLIENTS=${CLIENTS:-100}
RATE=${RATE:-2000}
DURATION=${DURATION:-15}
RUNS=${RUNS:-1}
for b in "$BENCH/fakeami" "$BENCH/wsload" "$AMIHUB"; do
  [ -x "$b" ] || { echo "missing $b" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "needs redis-server" >&2; exit 1; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
T=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

# Waits (up to 20 s) until `cmd...` succeeds.
wait_for() {
  for _ in $(seq 1 400); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "timed out: $*" >&2
  return 1
}
connected() { curl -sf "http://127.0.0.1:$1/api/v1/servers" | grep -q '"Connected"'; }
owns() { curl -sf "http://127.0.0.1:$1/api/v1/cluster" | grep -q "\"node_id\":\"$2\",\"servers\":\[1\]"; }
load() { cut -d' ' -f1 /proc/loadavg; }

# node_config NAME HTTP_PORT AMI_PORT [REDIS_PORT]
node_config() {
  cat <<Y
[http]
listen = "127.0.0.1:$2"
web_root = "$T"
[limits]
session_queue_bytes = 16777216
[[servers]]
id = 1
name = "pbx1"
host = "127.0.0.1"
port = $3
username = "admin"
secret = "secret"
auth = "plain"
Y
  if [ -n "${4:-}" ]; then
    printf '[cluster]\nredis_url = "redis://127.0.0.1:%s/"\nnode_id = "%s"\nlease_ms = 5000\n' "$4" "$1"
  fi
}

start() { # start NAME CONFIG_TEXT -> pid in $started
  printf '%s\n' "$2" >"$T/$1.toml"
  RUST_LOG=warn "$AMIHUB" --config "$T/$1.toml" >"$T/$1.log" 2>&1 &
  started=$!
  pids+=("$started")
}

fakeami() { # fakeami PORT RATE
  "$BENCH/fakeami" --listen "127.0.0.1:$1" --username admin --secret secret --rate "$2" \
    --max-runtime 600 2>>"$T/fakeami.log" &
  pids+=("$!")
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

wsload() { # wsload LABEL HTTP_PORT CLIENTS
  local before after out
  before=$(load)
  out=$("$BENCH/wsload" --url "ws://127.0.0.1:$2/ws" --clients "$3" --duration "$DURATION" 2>/dev/null | tail -1)
  after=$(load)
  echo "{\"label\":\"$1\",\"load_before\":$before,\"load_after\":$after,${out#\{}"
}

redis_cli() { redis-cli -p "$rport" "$@"; }

for run in $(seq 1 "$RUNS"); do
  # ---- single node ----
  ami=$(free_port); http=$(free_port)
  fakeami "$ami" "$RATE"; fake=$!
  start single "$(node_config single "$http" "$ami")"; single=$started
  wait_for connected "$http"
  wsload "single-c$CLIENTS-r$RATE-$run" "$http" "$CLIENTS"
  stop "$single"; stop "$fake"

  # ---- cluster: a owns pbx1, clients on b ----
  rport=$(free_port); ami=$(free_port); ha=$(free_port); hb=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$T" >"$T/redis.log" 2>&1 &
  redis=$!; pids+=("$redis")
  wait_for redis_cli ping
  fakeami "$ami" "$RATE"; fake=$!
  start a "$(node_config a "$ha" "$ami" "$rport")"; a=$started
  wait_for owns "$ha" a
  start b "$(node_config b "$hb" "$ami" "$rport")"; b=$started
  wait_for connected "$hb"
  redis_cli config resetstat >/dev/null
  wsload "cluster-c$CLIENTS-r$RATE-$run" "$hb" "$CLIENTS"
  events=$(redis_cli get 'amihub:{s1}:offset')
  echo "# redis after the cluster run: stream offset $events, XLEN $(redis_cli xlen 'amihub:{s1}:events'), MEMORY USAGE $(redis_cli memory usage 'amihub:{s1}:events' samples 0) bytes, used_memory $(redis_cli info memory | grep '^used_memory:' | tr -d '\r')"
  redis_cli info commandstats | grep -E '^cmdstat_(evalsha|xadd|xread|xrevrange|mget|set|sadd|smembers|get|eval):' | tr -d '\r' | sed 's/^/#   /'
  echo "# redis total_commands_processed $(redis_cli info stats | grep '^total_commands_processed:' | cut -d: -f2 | tr -d '\r') over the run's events (see README for the per-event figure)"
  stop "$b"; stop "$a"; stop "$fake"

  # ---- one PBX stream at full speed, one client on b ----
  ami=$(free_port); ha=$(free_port); hb=$(free_port)
  redis_cli flushall >/dev/null
  fakeami "$ami" 0; fake=$!
  start a "$(node_config a "$ha" "$ami" "$rport")"; a=$started
  wait_for owns "$ha" a
  start b "$(node_config b "$hb" "$ami" "$rport")"; b=$started
  wait_for connected "$hb"
  redis_cli config resetstat >/dev/null
  o1=$(redis_cli get 'amihub:{s1}:offset'); t1=$(date +%s.%N)
  wsload "stream-max-c1-$run" "$hb" 1
  o2=$(redis_cli get 'amihub:{s1}:offset'); t2=$(date +%s.%N)
  echo "# published through the stream: $(python3 -c "print(round(($o2-$o1)/($t2-$t1)))") events/s (offset $o1 -> $o2)"
  echo "# redis at full speed: MEMORY USAGE $(redis_cli memory usage 'amihub:{s1}:events' samples 0) bytes for XLEN $(redis_cli xlen 'amihub:{s1}:events')"
  redis_cli info commandstats | grep -E '^cmdstat_(evalsha|xadd|xread|xrevrange|mget|set|sadd|smembers|get|eval):' | tr -d '\r' | sed 's/^/#   /'
  echo "# redis total_commands_processed $(redis_cli info stats | grep '^total_commands_processed:' | cut -d: -f2 | tr -d '\r') for $((o2 - o1)) events"
  stop "$b"; stop "$a"; stop "$fake"; stop "$redis"
done

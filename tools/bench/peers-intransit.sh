#!/usr/bin/env bash
# peers-intransit.sh - measure intransit as an "--extra" pair of shared/bench/peers.sh.
#
#   export BENCH_WORK=$(mktemp -d); shared/bench/peers.sh setup     # once
#   tools/bench/peers-intransit.sh [--rounds N] [--peers "LIST"] [--bin bin/intransit] [--peers-sh PATH]
#
# The pair: A = the intransit agent attached to the cgroup2 ROOT (every process on the
# machine, including peers.sh's load client) with one enforce rule for 127.0.0.1:PORT only;
# B = peers.sh's naive Go terminator ($BENCH_WORK/bin/gopair server, mTLS) -> sink :9000,
# so the comparison with gopair/gopair-resume isolates intransit's A side.
#
#   load ──plain──► connect(127.0.0.1:PORT) ─bpf─► agent (127.0.0.1:PROXY) ──TLS 1.3, mTLS──► gopair server :B ──► sink :9000
#
# Nothing listens on 127.0.0.1:PORT; a connect there that were not redirected would be
# refused. peers.sh only measures an --extra pair when something listens on its port
# (it checks the port number in /proc/net/tcp, any address), so an idle placeholder
# listens on 127.0.0.2:PORT: it satisfies that check and can never receive the load's
# connects to 127.0.0.1.
#
# Everything it starts is stopped on exit (agent, pins via `intransit uninstall`, B,
# placeholder), by recorded PID only. Exit status is peers.sh's.
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ROUNDS=3
PEERS="direct stunnel haproxy nginx gopair gopair-resume gopair-plain"
BIN=$repo/bin/intransit
PEERS_SH=$repo/../shared/bench/peers.sh
[ -x "$PEERS_SH" ] || PEERS_SH=/work/shared/bench/peers.sh
PORT=12001       # the protected port the load client dials (redirected)
B_PORT=12002     # gopair server (TLS terminate)
PROXY_PORT=12003 # agent proxy listener
METRICS_PORT=12004

die() { echo "peers-intransit: $*" >&2; exit 1; }
log() { echo "peers-intransit: $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --peers-sh) PEERS_SH=$2; shift 2 ;;
    -h | --help) sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "needs root (the agent attaches BPF programs to the cgroup2 root)"
[ -n "${BENCH_WORK:-}" ] || die "set BENCH_WORK and run '$PEERS_SH setup' first"
W=$BENCH_WORK
[ -x "$W/bin/gopair" ] && [ -x "$W/bin/sink" ] && [ -s "$W/certs/ca.pem" ] || die "$W is not set up: run '$PEERS_SH setup'"
[ -x "$BIN" ] || die "$BIN not found (make build, or --bin)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
for p in $PORT $B_PORT $PROXY_PORT $METRICS_PORT; do
  ss -Hltn "sport = :$p" | grep -q . && die "port $p is in use"
done

CG=$(awk '{for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break }}' /proc/self/mountinfo)
[ -n "$CG" ] || die "no cgroup2 mount in /proc/self/mountinfo"
D=$W/intransit
mkdir -p "$D"
PIN=/sys/fs/bpf/intransit-peers-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
AGENT_PID="" B_PID="" HOLD_PID=""

# stop PID: TERM, KILL after 15 s (the agent drains sessions for up to 10 s)
stop() {
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

cleanup() {
  trap - EXIT INT TERM
  stop "$AGENT_PID"
  # Detach from the cgroup2 root and remove the pins, whatever state the agent reached.
  if [ -d "$PIN" ]; then
    "$BIN" uninstall --pin-path "$PIN" >&2 || log "uninstall --pin-path $PIN failed"
  fi
  stop "$B_PID"
  stop "$HOLD_PID"
  rm -f "$D"/*.pid
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# B: TLS terminate (mTLS, TLS 1.3) -> sink, the same binary as the gopair peers' B side.
"$W/bin/gopair" server -certs "$W/certs" -listen 127.0.0.1:$B_PORT -target 127.0.0.1:9000 -v \
  >>"$W/logs/intransit-b.log" 2>&1 </dev/null &
B_PID=$!
echo "$B_PID" >"$D/b.pid"

# Placeholder for peers.sh's "something listens on PORT" check (see the header).
"$W/bin/sink" -listen 127.0.0.2:$PORT >>"$W/logs/intransit-placeholder.log" 2>&1 </dev/null &
HOLD_PID=$!

cat >"$D/intransit.yaml" <<EOF
# tools/bench/peers-intransit.sh: A side of the "intransit" pair
cgroup: $CG
bpf: {pinPath: $PIN}
proxy: {port: $PROXY_PORT}
audit: {file: $W/logs/intransit-audit.jsonl}
metrics: {listen: 127.0.0.1:$METRICS_PORT}
api: {socket: $D/api.sock}
rules:
  - name: peers
    ports: [$PORT]
    destinations: [127.0.0.1/32]
    mode: enforce
    upstream:
      tls:
        port: $B_PORT
        serverName: localhost
        caFile: $W/certs/ca.pem
        certFile: $W/certs/client.crt
        keyFile: $W/certs/client.key
EOF

"$BIN" agent --config "$D/intransit.yaml" --log-level warn >>"$W/logs/intransit-agent.log" 2>&1 </dev/null &
AGENT_PID=$!
echo "$AGENT_PID" >"$D/agent.pid"
for i in $(seq 1 150); do
  kill -0 "$AGENT_PID" 2>/dev/null || die "agent exited; see $W/logs/intransit-agent.log: $(tail -3 "$W/logs/intransit-agent.log")"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS_PORT/readyz")" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS_PORT/readyz")" = 200 ] || die "agent not ready after 15 s"
ss -Hltn "sport = :$B_PORT" | grep -q . || die "gopair server is not listening on $B_PORT; see $W/logs/intransit-b.log"
log "ready: agent pid $AGENT_PID (cgroup $CG, pins $PIN), B pid $B_PID; protected 127.0.0.1:$PORT"

# Smoke check through the whole chain with a temporary sink (peers.sh run starts its own).
if ! ss -Hltn "sport = :9000" | grep -q .; then
  "$W/bin/sink" -listen 127.0.0.1:9000 >/dev/null 2>&1 </dev/null &
  sink=$!
  sleep 0.3
  out=$(timeout 20 "$W/bin/load" pingpong -addr 127.0.0.1:$PORT -n 100 -warm 0 -dur 10s -label smoke 2>&1)
  rc=$?
  stop "$sink"
  [ $rc = 0 ] || die "smoke check through intransit failed: $out"
  log "smoke check: ${out#RESULT }"
fi

"$PEERS_SH" run --rounds "$ROUNDS" --peers "$PEERS" --extra "intransit=$PORT:cat $D/agent.pid $D/b.pid"
rc=$?
log "audit: $(grep -c '"session_start"' "$W/logs/intransit-audit.jsonl" 2>/dev/null || echo 0) sessions upgraded" \
  "($(grep '"session_start"' "$W/logs/intransit-audit.jsonl" 2>/dev/null | grep -c '"resumed":true') resumed)"
exit $rc

#!/usr/bin/env bash
# make demo: intransit end to end on one machine, no cluster.
#
#   host netns, cgroup "intransit-demo"            netns "itdemo-exec"
#   curl http://10.203.0.2:8080  ──veth itd0 ──►   executor: :8080 plaintext, :8443 TLS
#
# The same curl runs under each mode (audit, enforce, deny), then with the agent
# stopped (fail closed). tcpdump on the veth shows what crossed the wire.
# Then a plaintext-only executor behind an authenticated tunnel, and session
# recording with redaction, credential injection, replay and export.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "make demo needs root (BPF, cgroups, network namespaces)"; exit 1; }
missing=()
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

NS=itdemo-exec
HOSTIF=itd0
NSIF=itd1
HOSTIP=10.203.0.1
EXECIP=10.203.0.2
SECRET="Bearer demo-secret-$RANDOM$RANDOM"
WORK=$(mktemp -d /tmp/intransit-demo.XXXXXX)
CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
CG=$CG2/intransit-demo
PIN=/sys/fs/bpf/intransit-demo
PORT=15101
METRICS=127.0.0.1:19464
CGX=$CG2/intransit-demo-exec
PINB=/sys/fs/bpf/intransit-demo-b
METRICSB=$EXECIP:19465
AGENT_PID=
AGENTB_PID=
TCPDUMP_PID=
EXEC_PID=
LEGACY_PID=

cleanup() {
  set +e
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  [ -n "$TCPDUMP_PID" ] && kill "$TCPDUMP_PID" 2>/dev/null && wait "$TCPDUMP_PID" 2>/dev/null
  [ -n "$AGENTB_PID" ] && kill "$AGENTB_PID" 2>/dev/null && wait "$AGENTB_PID" 2>/dev/null
  [ -n "$EXEC_PID" ] && kill "$EXEC_PID" 2>/dev/null && wait "$EXEC_PID" 2>/dev/null
  [ -n "$LEGACY_PID" ] && kill "$LEGACY_PID" 2>/dev/null && wait "$LEGACY_PID" 2>/dev/null
  "$ROOT/bin/intransit" uninstall --pin-path "$PIN" >/dev/null 2>&1
  "$ROOT/bin/intransit" uninstall --pin-path "$PINB" >/dev/null 2>&1
  for cg in "$CG" "$CGX"; do
    [ -d "$cg" ] || continue
    for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do echo "$p" > "$CG2/cgroup.procs"; done
    rmdir "$cg"
  done
  ip link del "$HOSTIF" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

bold "setup: a network namespace for the executor, a veth pair, a cgroup for the client"
ip netns add "$NS"
ip link add "$HOSTIF" type veth peer name "$NSIF"
ip link set "$NSIF" netns "$NS"
ip addr add "$HOSTIP/24" dev "$HOSTIF" && ip link set "$HOSTIF" up
ip netns exec "$NS" ip addr add "$EXECIP/24" dev "$NSIF"
ip netns exec "$NS" ip link set "$NSIF" up
ip netns exec "$NS" ip link set lo up
mkdir -p "$CG"
say "executor netns $NS at $EXECIP (veth $HOSTIF <-> $NSIF); client cgroup $CG"

"$ROOT/bin/demoserver" -certs "$WORK" -gen "executor.demo,$EXECIP"
nsenter --net=/var/run/netns/$NS "$ROOT/bin/demoserver" -certs "$WORK" -plain "$EXECIP:8080" -tls "$EXECIP:8443" 2>"$WORK/executor.log" &
EXEC_PID=$!
say "executor serves plaintext HTTP on :8080 and HTTPS on :8443 (cert for executor.demo, CA $WORK/ca.pem)"

write_config() { # mode
  cat > "$WORK/intransit.yaml" <<YAML
cgroup: $CG
bpf: {pinPath: $PIN}
proxy: {port: $PORT}
audit: {file: $WORK/audit.jsonl}
metrics: {listen: $METRICS}
api: {socket: $WORK/api.sock}
rules:
  - name: executor
    ports: [8080]
    destinations: [10.203.0.0/24]
    mode: $1
YAML
  if [ "$1" = enforce ]; then
    cat >> "$WORK/intransit.yaml" <<YAML
    upstream: {tls: {port: 8443, serverName: executor.demo, caFile: $WORK/ca.pem}}
YAML
  fi
}

start_agent() {
  "$ROOT/bin/intransit" agent --config "$WORK/intransit.yaml" 2>>"$WORK/agent.log" &
  AGENT_PID=$!
  for _ in $(seq 100); do
    curl -fs "http://$METRICS/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "agent did not become ready:"; cat "$WORK/agent.log"; exit 1
}

stop_agent() {
  kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=
}

# The legacy client: plain curl, in the cgroup, sending a credential in plaintext.
# curl -v is asked only for the line that carries the connect errno.
client() {
  sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" \
    curl -sS -v --max-time 5 -H "Authorization: $SECRET" "http://$EXECIP:8080/orders" 2>&1 \
    | grep -E '^executor:|Immediate connect fail|connect to .* failed|^curl:' || true
}

capture() { # file
  tcpdump --immediate-mode -i "$HOSTIF" -U -s 0 -w "$1" "tcp" 2>/dev/null &
  TCPDUMP_PID=$!
  sleep 0.5
}
end_capture() {
  sleep 0.3; kill "$TCPDUMP_PID"; wait "$TCPDUMP_PID" 2>/dev/null || true; TCPDUMP_PID=
}
wire_report() { # file
  local to8080 to8443 leaked
  to8080=$(tcpdump -r "$1" -nn 'tcp dst port 8080 and tcp[tcpflags] & tcp-syn != 0' 2>/dev/null | wc -l)
  to8443=$(tcpdump -r "$1" -nn 'tcp dst port 8443 and tcp[tcpflags] & tcp-syn != 0' 2>/dev/null | wc -l)
  leaked=$(tcpdump -r "$1" -nn -A 2>/dev/null | grep -c "demo-secret" || true)
  say "on the wire ($HOSTIF): connections to :8080 (plaintext) = $to8080, to :8443 (TLS) = $to8443, packets showing the credential = $leaked"
}
audit_since() { # line number
  tail -n +"$1" "$WORK/audit.jsonl" 2>/dev/null | sed 's/^/   audit: /'
}
lines() { wc -l < "$WORK/audit.jsonl" 2>/dev/null || echo 0; }

bold "1. mode: audit (dry run): the connection passes in plaintext and is reported"
write_config audit
start_agent
capture "$WORK/audit.pcap"
n=$(( $(lines) + 1 ))
say "curl -H 'Authorization: ...' http://$EXECIP:8080/orders"
client | sed 's/^/   client: /'
end_capture
sleep 0.3
audit_since "$n"
wire_report "$WORK/audit.pcap"

bold "2. mode: enforce: the same curl is redirected by eBPF into the agent and upgraded to TLS"
write_config enforce
kill -HUP "$AGENT_PID"; sleep 0.5
capture "$WORK/enforce.pcap"
n=$(( $(lines) + 1 ))
client | sed 's/^/   client: /'
end_capture
sleep 0.3
audit_since "$n"
wire_report "$WORK/enforce.pcap"
leaked=$(tcpdump -r "$WORK/enforce.pcap" -nn -A 2>/dev/null | grep -c "demo-secret" || true)
plain=$(tcpdump -r "$WORK/enforce.pcap" -nn 'tcp dst port 8080' 2>/dev/null | wc -l)
if [ "$leaked" != 0 ] || [ "$plain" != 0 ]; then echo "FAIL: plaintext crossed the wire in enforce mode"; exit 1; fi
say "=> no plaintext crossed the veth: the credential left the host only inside TLS"

bold "3. mode: deny: the connect fails with EPERM"
write_config deny
kill -HUP "$AGENT_PID"; sleep 0.5
n=$(( $(lines) + 1 ))
client | sed 's/^/   client: /'
sleep 0.3
audit_since "$n"

bold "4. fail closed: enforce, then the agent stops; pinned programs keep redirecting to a closed port"
write_config enforce
kill -HUP "$AGENT_PID"; sleep 0.5
stop_agent
"$ROOT/bin/intransit" status --config "$WORK/intransit.yaml" 2>&1 | sed 's/^/   status: /' || true
capture "$WORK/down.pcap"
client | sed 's/^/   client: /'
end_capture
wire_report "$WORK/down.pcap"

bold "5. restart: the agent picks up its pinned programs (no second attachment) and serves again"
start_agent
client | sed 's/^/   client: /'
"$ROOT/bin/intransit" status --config "$WORK/intransit.yaml" 2>&1 | sed -n '1,12p' | sed 's/^/   status: /'
curl -s "http://$METRICS/metrics" | grep -E '^intransit_connections_total\{rule="executor"' | grep -v ' 0$' | sed 's/^/   metric: /'

bold "6. a legacy executor that only speaks plaintext: an authenticated tunnel between two agents"
say "host B (netns $NS) runs a plaintext-only executor on every address, port 9090, and its own agent:"
say "inbound tunnel on $EXECIP:15008 (TLS 1.3 + OIDC token check), forwarding over loopback to 127.0.0.1:9090,"
say "and an eBPF ingress program that drops plaintext reaching :9090 from off the host."
mkdir -p "$CGX"
"$ROOT/bin/demoserver" -certs "$WORK" -gen-token "system:serviceaccount:agents:planner"
sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CGX" \
  nsenter --net=/var/run/netns/$NS "$ROOT/bin/demoserver" -plain "0.0.0.0:9090" 2>"$WORK/legacy.log" &
LEGACY_PID=$!
cat > "$WORK/b.yaml" <<YAML
bpf: {pinPath: $PINB}
proxy: {port: 15102}
audit: {file: $WORK/audit-b.jsonl}
metrics: {listen: $METRICSB}
api: {socket: $WORK/b.sock}
inbound:
  listen: $EXECIP:15008
  cgroup: $CGX
  tls: {certFile: $WORK/server.crt, keyFile: $WORK/server.key}
  oidc: {issuer: "https://issuer.demo.intransit", audience: intransit, jwksFile: $WORK/jwks.json}
  services:
    - name: legacy
      port: 9090
      forward: 127.0.0.1:9090
      mode: enforce
      allow: [{sub: "system:serviceaccount:agents:planner"}]
YAML
nsenter --net=/var/run/netns/$NS "$ROOT/bin/intransit" agent --config "$WORK/b.yaml" 2>>"$WORK/agent-b.log" &
AGENTB_PID=$!
for _ in $(seq 100); do curl -fs "http://$METRICSB/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
write_config enforce
cat >> "$WORK/intransit.yaml" <<YAML
  - name: legacy
    ports: [9090]
    destinations: [10.203.0.0/24]
    mode: enforce
    upstream: {tunnel: {port: 15008, caFile: $WORK/ca.pem}}
identity:
  token: {file: $WORK/token}
YAML
kill -HUP "$AGENT_PID"; sleep 0.5
capture "$WORK/tunnel.pcap"
nb=$(( $(wc -l < "$WORK/audit-b.jsonl" 2>/dev/null || echo 0) + 1 ))
say "the planner (host A, in the cgroup): curl -H 'Authorization: ...' http://$EXECIP:9090/jobs"
sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" \
  curl -sS --max-time 5 -H "Authorization: $SECRET" "http://$EXECIP:9090/jobs" 2>&1 | sed 's/^/   client: /'
say "anyone else on host A, straight to the executor port in plaintext:"
curl -sS --max-time 2 "http://$EXECIP:9090/jobs" 2>&1 | sed 's/^/   other: /' || true
end_capture
sleep 0.3
tail -n +"$nb" "$WORK/audit-b.jsonl" | sed 's/^/   audit B: /'
to9090=$(tcpdump -r "$WORK/tunnel.pcap" -nn 'tcp dst port 9090 and tcp[tcpflags] & tcp-syn != 0' 2>/dev/null | wc -l)
to15008=$(tcpdump -r "$WORK/tunnel.pcap" -nn 'tcp dst port 15008 and tcp[tcpflags] & tcp-syn != 0' 2>/dev/null | wc -l)
leaked=$(tcpdump -r "$WORK/tunnel.pcap" -nn -A 2>/dev/null | grep -c "demo-secret" || true)
say "on the wire: SYNs to :9090 = $to9090 (the dropped attempt), to the tunnel :15008 = $to15008, packets showing the credential = $leaked"
if [ "$leaked" != 0 ]; then echo "FAIL: the credential crossed the wire in plaintext"; exit 1; fi
say "=> the executor only ever sees loopback from its agent; the credential crossed inside TLS 1.3"

bold "7. sessions: each exchange recorded (secrets redacted before disk), the executor's credential injected"
EXEC_TOKEN="Bearer executor-held-$RANDOM$RANDOM"
printf '%s\n' "$EXEC_TOKEN" > "$WORK/executor-token"; chmod 600 "$WORK/executor-token"
write_config enforce
cat >> "$WORK/intransit.yaml" <<YAML
    record: full
    inject: {header: Authorization, valueFile: $WORK/executor-token}
recordings: {dir: $WORK/recordings}
YAML
kill -HUP "$AGENT_PID"; sleep 0.5
fp() { printf '%s' "$1" | sha256sum | cut -c1-8; }
say "the client sends its own credential (sha256 $(fp "$SECRET")); the rule holds the executor's (sha256 $(fp "$EXEC_TOKEN")):"
client | sed 's/^/   client: /'
say "and posts a job with a password in its JSON body:"
sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" \
  curl -sS --max-time 5 -H "Authorization: $SECRET" -H 'Content-Type: application/json' \
  -d '{"task":"nightly-build","password":"demo-secret-in-body"}' "http://$EXECIP:8080/jobs" 2>&1 | sed 's/^/   client: /'
sleep 0.5
IT="$ROOT/bin/intransit"
"$IT" sessions list --config "$WORK/intransit.yaml" | sed 's/^/   sessions: /'
ID=$("$IT" sessions list --config "$WORK/intransit.yaml" -o json | grep -o '"id": "[0-9a-f]*"' | tail -1 | grep -o '[0-9a-f]\{16\}')
say "intransit sessions replay $ID"
"$IT" sessions replay "$ID" --config "$WORK/intransit.yaml" | sed 's/^/   /'
"$IT" sessions verify "$ID" --config "$WORK/intransit.yaml" | sed 's/^/   verify: /'
"$IT" sessions export "$ID" --config "$WORK/intransit.yaml" --format pcapng -o "$WORK/session.pcapng"
"$IT" sessions export "$ID" --config "$WORK/intransit.yaml" --format har -o "$WORK/session.har"
say "exported session.pcapng (Wireshark/tshark: TCP synthesized between the original source and destination) and session.har (HAR 1.2)"
if command -v tshark >/dev/null; then
  tshark -r "$WORK/session.pcapng" -Y http 2>/dev/null | sed 's/^/   tshark: /'
fi
leaks=$(grep -rl -e "demo-secret" -e "executor-held" "$WORK/recordings" "$WORK/session.pcapng" "$WORK/session.har" "$WORK/audit.jsonl" 2>/dev/null | wc -l || true)
say "files under recordings/, the exports and the audit trail containing either credential or the password: $leaks"
if [ "$leaks" != 0 ]; then echo "FAIL: a secret reached a recording or an export"; exit 1; fi
"$IT" audit tail --config "$WORK/intransit.yaml" | tail -n 3 | sed 's/^/   audit tail: /'

bold "done: cleaning up (agents, pins, cgroups, netns, veth)"

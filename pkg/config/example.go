package config

// ExampleYAML is a complete, commented configuration. It parses as is (no
// files are referenced), so `intransit agent --print-example` output is a
// working starting point.
const ExampleYAML = `# intransit agent configuration.
#
# Plaintext TCP connects from processes in the cgroup below are matched in the
# kernel by destination port (and optionally prefix). Enforce rules redirect
# them to the local proxy, which re-originates them over TLS. Unknown keys and
# bad values are refused at load time, all of them in one report.

# cgroup v2 directory whose processes (and their descendants) are covered.
# Absolute path. Default: the cgroup2 root, found in /proc/self/mountinfo.
#cgroup: /sys/fs/cgroup/system.slice

bpf:
  # bpffs directory for the pinned programs, links and maps.
  # Default: /sys/fs/bpf/intransit
  pinPath: /sys/fs/bpf/intransit
  # Capacity of each original-destination map, 64..16777216. Default: 65536
  mapSize: 65536
  # SO_MARK on the proxy's own upstream sockets; marked sockets are never
  # redirected. Non-zero; change it only if it collides with another user.
  # Default: 0x1e7a0001
  mark: 0x1e7a0001

proxy:
  # Local port redirected connects land on; no rule may use it. Default: 15001
  port: 15001
  # Limit for the upstream TCP connect. Default: 5s
  dialTimeout: 5s
  # Limit for the upstream TLS handshake. Default: 10s
  handshakeTimeout: 10s
  # Close a relayed connection after this long without traffic; a negative
  # value (e.g. -1s) disables it. Default: 1h
  idleTimeout: 1h

audit:
  # JSON-lines audit trail: "-" for stdout, or a file in an existing
  # directory, e.g. /var/log/intransit/audit.jsonl. Default: "-"
  file: "-"

metrics:
  # Prometheus /metrics and health endpoint as host:port, or "off".
  # Default: 127.0.0.1:9464
  listen: 127.0.0.1:9464

api:
  # Unix socket the intransit CLI talks to. Default: /run/intransit/api.sock
  socket: /run/intransit/api.sock

# Rules select plaintext connects. At least one is required, and a given
# (port, destination prefix) may appear in only one rule.
rules:
  - # Unique, [a-zA-Z0-9_.-]{1,63}; used as a metrics label. Required.
    name: executor
    # Destination ports, 1..65535. Required.
    ports: [8080]
    # CIDRs or bare IPs. Default: every destination.
    destinations: [10.0.0.0/8]
    # audit: let the connect through and record it.
    # enforce: redirect it to the proxy and upgrade it to TLS.
    # deny: fail the connect with EPERM.
    # Required.
    mode: enforce
    # Required when mode is enforce, refused otherwise.
    upstream:
      tls:
        # Port to dial TLS on. Default: the original destination port.
        port: 8443
        # SNI and the name verified in the server's certificate.
        # Default: the destination IP.
        serverName: executor.internal
        # PEM CA bundle to verify the server with. Default: the system roots.
        #caFile: /etc/intransit/ca.pem
        # PEM client certificate and key for mutual TLS; set both or
        # neither. Default: none.
        #certFile: /etc/intransit/client.pem
        #keyFile: /etc/intransit/client-key.pem

  - # Record, but do not touch, plaintext connects to Postgres anywhere.
    name: postgres
    ports: [5432]
    mode: audit

  - # Refuse plaintext telnet.
    name: telnet
    ports: [23]
    mode: deny
`

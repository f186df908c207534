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
  # Host IPv4 address reachable from pod network namespaces (e.g. the node
  # IP): enforced connects from other namespaces are sent there, since pods
  # cannot reach the host's loopback. Default: none (such connects are
  # refused).
  #podAddress: 10.0.0.5
  # Limit for the upstream TCP connect. Default: 5s
  dialTimeout: 5s
  # Limit for the upstream TLS handshake. Default: 10s
  handshakeTimeout: 10s
  # Close a relayed connection after this long without traffic; a negative
  # value (e.g. -1s) disables it. Default: 1h
  idleTimeout: 1h
  # On shutdown (SIGTERM) the agent stops accepting, lets established
  # sessions run this long, then cuts the rest; the pinned programs stay, so
  # new enforced connects are refused meanwhile. Default: 10s
  drainTimeout: 10s

audit:
  # JSON-lines audit trail: "-" for stdout, or a file in an existing
  # directory, e.g. /var/log/intransit/audit.jsonl. Default: "-"
  file: "-"

metrics:
  # Prometheus /metrics and health endpoint as host:port, or "off".
  # Default: 127.0.0.1:9464
  listen: 127.0.0.1:9464
  # Also count connections by workload in
  # intransit_workload_connections_total{rule,verdict,workload}: a pod's
  # namespace/serviceaccount, a container runtime, a systemd unit, "host".
  # Default: false (label cardinality).
  workloadLabels: false

api:
  # Unix socket the intransit CLI talks to. Default: /run/intransit/api.sock
  socket: /run/intransit/api.sock

# How this host's workloads prove who they are to peer agents, for tunnel
# rules: a token sent with each tunnelled connection (Authorization: Bearer).
# Default: none; tunnel rules then need a client certificate
# (upstream.tunnel.certFile and keyFile).
identity:
  # Resolve workloads to Kubernetes pods (namespace, name, uid, service
  # account, labels) with an informer on this node's pods: auto when running
  # in a cluster, on, off. Default: auto
  pods: auto
  # Exactly one token source:
  #   file: a token file, re-read whenever it changes (a Kubernetes projected
  #     service-account token, or a token written by another agent). If it
  #     does not exist yet, its directory must.
  #   clientCredentials: an OAuth2 client-credentials grant, refreshed before
  #     the token expires.
  #   kubernetes: a token for the source pod's own service account, minted
  #     with the TokenRequest API and cached until near expiry.
  #
  #token:
  #  file: /var/run/secrets/intransit/token
  #
  #token:
  #  clientCredentials:
  #    # OIDC issuer whose discovery document names the token endpoint, or
  #    # tokenURL, the token endpoint itself: exactly one of the two. https
  #    # (http only for loopback hosts).
  #    issuer: https://issuer.internal
  #    #tokenURL: https://issuer.internal/oauth2/token
  #    # OAuth2 client ID. Required.
  #    clientID: intransit
  #    # File holding the client secret; secrets are never written here.
  #    # Readable and non-empty. Required.
  #    clientSecretFile: /etc/intransit/client-secret
  #    # Scopes to request. Default: none.
  #    scopes: [tunnel]
  #    # Audience to request, for issuers that want one. Default: none.
  #    audience: intransit
  #
  #token:
  #  kubernetes:
  #    # Audience of the minted token. Default: intransit
  #    audience: intransit
  #    # Lifetime to request, 10m..24h. Default: 10m
  #    ttl: 10m

# Where the intransit agent for some destinations listens, for tunnel rules
# (NAT, pods behind a node address). The most specific prefix wins. Default:
# none, a tunnel goes to the original destination IP on upstream.tunnel.port.
#peers:
#  - # CIDRs or bare IPs, as in rules. Required.
#    destinations: [10.20.0.0/16]
#    # The peer agent's inbound address, IP:port (an IP literal). Required.
#    address: 192.0.2.10:15008

# Session recordings (rules[].record). Each recording is an append-only file
# of hash-chained chunks closed by a seal (docs/recording-format.md); files
# are 0600 in a 0700 directory, readable with intransit sessions.
recordings:
  # Absolute path, created if missing. Default: /var/lib/intransit/recordings
  dir: /var/lib/intransit/recordings
  # Cap per recording; beyond it the session goes on and its stream bytes are
  # no longer recorded (the recording says so). At least 256KiB.
  # Default: 64MiB
  maxSessionSize: 64MiB
  # Cap for the directory; the oldest recordings are deleted first.
  # Default: 1GiB
  maxTotalSize: 1GiB
  # When a recording cannot be written (disk full, read-only): continue (the
  # session goes on unrecorded, and an audit event says so) or close (the
  # session is ended). Default: continue
  onError: continue
  # HMAC key (at least 16 bytes) for the hash chain. Keep it outside dir:
  # without a key, whoever can rewrite recordings can recompute the chain.
  # Default: none (SHA-256 chain, plus the seal index).
  #keyFile: /etc/intransit/recording.key

# What is masked before anything is recorded. Each list replaces its default.
redaction:
  # Header names whose values are masked.
  headers: [Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key]
  # JSON keys (any depth) and form/query fields whose values are masked.
  jsonFields: [password, secret, token, api_key, apiKey, access_token, refresh_token, client_secret]
  # Built-in patterns applied to everything (headers, bodies, raw streams).
  patterns: [bearer, basic, jwt, aws-access-key, aws-secret-key, private-key]

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
    # Required when mode is enforce, refused otherwise: exactly one of tls
    # (the destination speaks TLS) and tunnel (see the legacy-executor rule).
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
    # off, metadata (a record per session: workload, destinations, TLS,
    # bytes, verdict) or full (both byte streams too, per HTTP exchange,
    # redacted). Enforce rules only. Default: off
    record: metadata
    # A credential the agent adds to every HTTP/1.x request, replacing any
    # the client sent, so the workload never holds it; connections that are
    # not HTTP/1.x are closed. valueFile holds the whole header value and is
    # re-read when it changes. Enforce rules only. Default: none.
    #inject:
    #  header: Authorization
    #  valueFile: /etc/intransit/executor-token

  - # Record, but do not touch, plaintext connects to Postgres anywhere.
    name: postgres
    ports: [5432]
    mode: audit

  - # Refuse plaintext telnet.
    name: telnet
    ports: [23]
    mode: deny

  #- # An executor that only speaks plaintext: carry each connect through a
  #  # TLS tunnel to the intransit agent on the executor's host (its inbound
  #  # section), which checks who is calling and forwards over loopback.
  #  name: legacy-executor
  #  ports: [9090]
  #  destinations: [10.20.0.0/16]
  #  mode: enforce
  #  upstream:
  #    tunnel:
  #      # The peer agent's inbound port (used when no peers entry matches).
  #      # Default: 15008
  #      port: 15008
  #      # Name verified in the peer agent's certificate. Default: the peer
  #      # address IP.
  #      serverName: executor-host.internal
  #      # PEM CA bundle to verify the peer agent with. Default: the system
  #      # roots.
  #      #caFile: /etc/intransit/peer-ca.pem
  #      # PEM client certificate and key (mTLS), set both or neither; one of
  #      # these or identity.token is required, or the peer agent could not
  #      # authenticate this host. Default: none.
  #      #certFile: /etc/intransit/agent.pem
  #      #keyFile: /etc/intransit/agent-key.pem
  #      # true: connections are streams multiplexed over a few pooled TLS
  #      # connections per peer (no handshake per connection). false: one
  #      # TLS connection per connection, never reused nor shared, for
  #      # benchmarking and for peers that cannot multiplex. Default: true
  #      #pooling: true

# The executor side of tunnels: accept them from peer agents, check who is
# calling and forward to local plaintext executors over loopback. Plaintext
# reaching a service's port from off-host is reported or dropped. Default:
# none (this host runs no executors behind intransit).
#inbound:
#  # Where tunnels are accepted, host:port with the host empty or an IP. Its
#  # port may not be proxy.port, nor a rule port covering loopback.
#  # Default: 0.0.0.0:15008
#  listen: 0.0.0.0:15008
#  # cgroup v2 directory of the executors, whose sockets get the plaintext
#  # ingress check. Absolute path. Default: the cgroup2 root.
#  #cgroup: /sys/fs/cgroup/system.slice/executor.service
#  tls:
#    # PEM certificate and key of the tunnel listener, reloaded when the
#    # files change. Required.
#    certFile: /etc/intransit/tls.crt
#    keyFile: /etc/intransit/tls.key
#    # PEM CA bundle; when set, callers must present a client certificate it
#    # signed (mTLS), and allow entries may use peerSubject and peerSAN.
#    # Default: none.
#    #clientCAFile: /etc/intransit/client-ca.pem
#  # Verification of the callers' workload tokens; required when an allow
#  # entry uses iss, sub, aud or claims. Default: none.
#  oidc:
#    # Issuer URL, https (http only for loopback hosts); its discovery
#    # document supplies the keys unless jwksFile is set. Required.
#    issuer: https://issuer.internal
#    # Audience a token must carry. Default: intransit
#    audience: intransit
#    # JSON Web Key Set file ({"keys": [...]}) used instead of discovery,
#    # for air-gapped clusters. Default: none.
#    #jwksFile: /etc/intransit/jwks.json
#  # Local executors reachable through the tunnel. At least one.
#  services:
#    - # Unique, [a-zA-Z0-9_.-]{1,63}; used as a metrics label. Required.
#      name: executor
#      # The port clients dial, and the plaintext port protected on this
#      # host. Unique; not inbound.listen's port nor proxy.port. Required.
#      port: 8080
#      # The plaintext executor: a loopback IP (127.0.0.0/8 or ::1) and
#      # port. Required.
#      forward: 127.0.0.1:8080
#      # Plaintext reaching port from off-host: audit reports it, enforce
#      # drops and reports it. Default: enforce
#      mode: enforce
#      # Callers let through: any entry allows, and within an entry every
#      # field set must match. At least one entry, each with at least one of:
#      #   iss, sub, aud: the token's issuer, subject, audience;
#      #   claims: named claims compared as strings, a name being a
#      #     "/"-separated path into nested objects;
#      #   peerSubject: the client certificate's subject (CN or full DN);
#      #   peerSAN: a client certificate SAN (DNS name, URI, IP address).
#      # Token fields need inbound.oidc, peer fields inbound.tls.clientCAFile.
#      allow:
#        - sub: "system:serviceaccount:agents:planner"
#        - claims: {"kubernetes.io/namespace": agents}
#        #- peerSAN: spiffe://cluster.local/ns/agents/sa/planner
`

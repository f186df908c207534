//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
//
// intransit datapath: catch plaintext TCP connects toward protected ports in a
// cgroup and, per rule, report them (audit), refuse them (deny) or redirect them
// to the local proxy (enforce), keeping the original destination where the proxy
// can find it on accept.
//
//   connect4/6    rule lookup; enforce: cookie -> orig, rewrite to the proxy
//   sockops       ACTIVE_ESTABLISHED: copy orig to (client ip, client port), the
//                 remote address the proxy sees on accept; CLOSE: drop both entries
//   getpeername   the application sees its original peer, not the proxy
//
// Addresses are kept as 16-byte IPv6 (IPv4 as ::ffff:a.b.c.d) so one map serves
// both families. Ports in maps are network byte order unless named _host.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// vmlinux.h-free build: the few constants we need.
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

// Context fields must be read with their own width.
#define READ_U32(f) (*(volatile __u32 *)&(f))

char LICENSE[] SEC("license") = "Dual MIT/GPL";

enum mode {
	MODE_AUDIT = 1,
	MODE_ENFORCE = 2,
	MODE_DENY = 3,
};

enum verdict {
	VERDICT_AUDIT = 1,    // passed untouched
	VERDICT_REDIRECT = 2, // rewritten to the proxy
	VERDICT_DENY = 3,     // refused with EPERM
	VERDICT_ERROR = 4,    // enforce rule, but the entry could not be stored: refused
	VERDICT_INGRESS_AUDIT = 5, // plaintext from off-host to an inbound service: reported
	VERDICT_INGRESS_DROP = 6,  // the same, dropped (inbound service in enforce mode)
};

enum stat {
	STAT_MATCHED = 0,
	STAT_AUDIT,
	STAT_REDIRECT,
	STAT_DENY,
	STAT_ERROR,
	STAT_EVENTS_LOST,
	STAT_ESTABLISHED,
	STAT_CLOSED,
	STAT_INGRESS_AUDIT,
	STAT_INGRESS_DROP,
	STAT_MAX,
};

// LPM key: workload group, port, then address. The group (from the
// client's cgroup, see workload_groups) is always fully specified, so a rule
// without CIDRs is a 32+16-bit prefix and one with 10.0.0.0/8 is 32+16+96+8.
// Group 0 is every cgroup that no rule's workload selector picked.
struct rule_key {
	__u32 prefixlen;
	__be32 group;
	__be16 port;
	__u8 addr[16];
	__u8 pad[2];
};

struct rule_val {
	__u32 rule_id;
	__u32 mode;
};

struct settings {
	__u32 mark;        // SO_MARK of the proxy's own sockets: never redirected
	__be16 proxy_port; // where enforced connects go
	__u16 pad;
	__be32 proxy_ip4;   // 127.0.0.1
	__u32 proxy_ip6[4]; // ::1
	// Clients in other network namespaces (pods) cannot reach the host's
	// loopback: their connects go to pod_proxy_ip4, a host address the
	// proxy also listens on. 0: not configured (such connects are refused).
	__be32 pod_proxy_ip4;
	__u32 pad2;
	__u64 host_netns_cookie;
};


// orig is what the proxy learns about a redirected connection.
struct orig {
	__u8 addr[16]; // original destination
	__be16 port;
	__u16 family; // of the client socket
	__u32 rule_id;
	__u32 pid; // tgid: the process id users know
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id;
	__u64 netns_cookie;
	__u64 cookie;
	char comm[16];
};

struct addr_key {
	__u8 addr[16];
	__u16 port_host;
	__u16 pad;
};

struct event {
	struct orig o; // connect events
	__u64 ts_ns;
	__u32 verdict;
	__u32 service_id; // ingress events: the inbound service
	__u8 peer_addr[16]; // ingress events: the off-host source
	__be16 peer_port;
	__u16 local_port; // ingress events: the service port (host order)
	__u16 family;
	__u16 pad;
};

// Inbound services on this host: plaintext reaching these ports from
// anywhere but loopback (where the local agent forwards) is reported or
// dropped. Keyed by port, host order.
struct service_val {
	__u32 service_id;
	__u32 mode;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct rule_key);
	__type(value, struct rule_val);
} rules_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings_map SEC(".maps");

// cgroup id -> workload group, kept by the agent from the rules' workload
// selectors (cgroup path globs, pod namespace and labels). Absent: group 0.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} workload_groups SEC(".maps");

// netns cookie -> proxy IPv4 address reachable from that namespace (the
// pod's host-side gateway address), kept by the agent as pods come and go.
// Absent: settings.pod_proxy_ip4.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __be32);
} netns_proxy SEC(".maps");

// Sized from the config at load time.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct orig);
} by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr_key);
	__type(value, struct orig);
} by_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, struct service_val);
} services_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats_map SEC(".maps");

// Referenced so bpf2go finds these types in BTF (-type).
const struct event *unused_event __attribute__((unused));
const struct addr_key *unused_addr_key __attribute__((unused));
const enum mode *unused_mode __attribute__((unused));
const enum verdict *unused_verdict __attribute__((unused));
const enum stat *unused_stat __attribute__((unused));
const struct service_val *unused_service_val __attribute__((unused));

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats_map, &idx);
	if (v)
		*v += 1;
}

static __always_inline void set_mapped4(__u8 *addr, __be32 ip4)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(&addr[12], &ip4, 4);
}

static __always_inline int is_mapped4(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void emit(struct orig *o, __u32 verdict)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(STAT_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	__builtin_memcpy(&e->o, o, sizeof(*o));
	e->ts_ns = bpf_ktime_get_ns();
	e->verdict = verdict;
	bpf_ringbuf_submit(e, 0);
}

// decide looks the destination up in the rules and records what happened.
// Returns the rule mode, or 0 when nothing matches / the socket is ours.
// proxy_ip4_for picks the proxy address reachable from the client's netns:
// loopback on the host; for another namespace its own entry (a known pod),
// else the configured pod address, else loopback (nothing listens on the
// pod's own loopback at the proxy port: refused, fail closed).
static __always_inline __be32 proxy_ip4_for(const struct settings *s, __u64 netns_cookie)
{
	if (netns_cookie != s->host_netns_cookie) {
		__be32 *ip = bpf_map_lookup_elem(&netns_proxy, &netns_cookie);
		if (ip && *ip != 0)
			return *ip;
		if (s->pod_proxy_ip4 != 0)
			return s->pod_proxy_ip4;
	}
	return s->proxy_ip4;
}

static __always_inline __u32 decide(struct bpf_sock_addr *ctx, struct orig *o,
				    struct settings **sp)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings_map, &zero);
	if (!s || s->proxy_port == 0)
		return 0; // not configured yet
	*sp = s;

	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	// The proxy's own upstream sockets carry the mark: without this check the
	// proxy would loop into itself.
	if (s->mark != 0 && sk->mark == s->mark)
		return 0;

	__u64 cgroup_id = bpf_get_current_cgroup_id();
	__u32 *group = bpf_map_lookup_elem(&workload_groups, &cgroup_id);
	struct rule_key k = {};
	k.prefixlen = 32 + 16 + 128;
	k.group = group ? bpf_htonl(*group) : 0;
	k.port = o->port;
	__builtin_memcpy(k.addr, o->addr, 16);
	struct rule_val *r = bpf_map_lookup_elem(&rules_map, &k);
	if (!r)
		return 0;

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	o->rule_id = r->rule_id;
	o->pid = pid_tgid >> 32;
	o->tid = (__u32)pid_tgid;
	o->uid = (__u32)uid_gid;
	o->gid = uid_gid >> 32;
	o->cgroup_id = cgroup_id;
	o->netns_cookie = bpf_get_netns_cookie(ctx);
	o->cookie = bpf_get_socket_cookie(ctx);
	bpf_get_current_comm(o->comm, sizeof(o->comm));
	count(STAT_MATCHED);

	switch (r->mode) {
	case MODE_AUDIT:
		count(STAT_AUDIT);
		emit(o, VERDICT_AUDIT);
		return MODE_AUDIT;
	case MODE_DENY:
		count(STAT_DENY);
		emit(o, VERDICT_DENY);
		return MODE_DENY;
	case MODE_ENFORCE:
		// Fail closed: no entry means the proxy could not learn the destination.
		if (bpf_map_update_elem(&by_cookie, &o->cookie, o, BPF_ANY) != 0) {
			count(STAT_ERROR);
			emit(o, VERDICT_ERROR);
			return MODE_DENY;
		}
		count(STAT_REDIRECT);
		emit(o, VERDICT_REDIRECT);
		return MODE_ENFORCE;
	}
	return 0;
}

SEC("cgroup/connect4")
int intransit_connect4(struct bpf_sock_addr *ctx)
{
	// Read ctx fields into locals first: the verifier rejects ctx reads at
	// offsets chosen by a branch.
	__u32 type = ctx->type;
	__u32 protocol = ctx->protocol;
	__be32 ip4 = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;

	if (type != SOCK_STREAM || (protocol != 0 && protocol != IPPROTO_TCP))
		return 1;

	struct orig o = {};
	set_mapped4(o.addr, ip4);
	o.port = port;
	o.family = AF_INET;

	struct settings *s = 0;
	switch (decide(ctx, &o, &s)) {
	case MODE_DENY:
		return 0;
	case MODE_ENFORCE:
		if (!s)
			return 0;
		ctx->user_ip4 = proxy_ip4_for(s, o.netns_cookie);
		ctx->user_port = s->proxy_port;
		return 1;
	}
	return 1;
}

SEC("cgroup/connect6")
int intransit_connect6(struct bpf_sock_addr *ctx)
{
	__u32 type = ctx->type;
	__u32 protocol = ctx->protocol;
	__u32 ip6[4];
	ip6[0] = READ_U32(ctx->user_ip6[0]);
	ip6[1] = READ_U32(ctx->user_ip6[1]);
	ip6[2] = READ_U32(ctx->user_ip6[2]);
	ip6[3] = READ_U32(ctx->user_ip6[3]);
	__be16 port = (__be16)ctx->user_port;

	if (type != SOCK_STREAM || (protocol != 0 && protocol != IPPROTO_TCP))
		return 1;

	struct orig o = {};
	__builtin_memcpy(o.addr, ip6, 16);
	o.port = port;
	o.family = AF_INET6;

	struct settings *s = 0;
	switch (decide(ctx, &o, &s)) {
	case MODE_DENY:
		return 0;
	case MODE_ENFORCE:
		if (!s)
			return 0;
		// A v4-mapped destination (::ffff:a.b.c.d on a dual-stack socket)
		// must stay v4-mapped: go to ::ffff:127.0.0.1.
		if (is_mapped4(ip6)) {
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
			ctx->user_ip6[3] = proxy_ip4_for(s, o.netns_cookie);
		} else {
			ctx->user_ip6[0] = s->proxy_ip6[0];
			ctx->user_ip6[1] = s->proxy_ip6[1];
			ctx->user_ip6[2] = s->proxy_ip6[2];
			ctx->user_ip6[3] = s->proxy_ip6[3];
		}
		ctx->user_port = s->proxy_port;
		return 1;
	}
	return 1;
}

static __always_inline void local_key(struct bpf_sock_ops *skops, struct addr_key *k)
{
	__u32 family = skops->family;
	__u32 port = skops->local_port; // host byte order
	if (family == AF_INET) {
		__be32 ip4 = skops->local_ip4;
		set_mapped4(k->addr, ip4);
	} else {
		__u32 ip6[4];
		// One 4-byte load each: clang would merge them into 8-byte loads,
		// which the verifier refuses for context fields.
		ip6[0] = READ_U32(skops->local_ip6[0]);
		ip6[1] = READ_U32(skops->local_ip6[1]);
		ip6[2] = READ_U32(skops->local_ip6[2]);
		ip6[3] = READ_U32(skops->local_ip6[3]);
		__builtin_memcpy(k->addr, ip6, 16);
	}
	k->port_host = (__u16)port;
	k->pad = 0;
}

SEC("sockops")
int intransit_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	__u64 cookie;
	struct orig *o;
	struct addr_key k = {};

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		// Ask for state changes on redirected sockets only, so a connect
		// that never establishes (agent down) still drops its entry.
		cookie = bpf_get_socket_cookie(skops);
		if (bpf_map_lookup_elem(&by_cookie, &cookie))
			bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(skops);
		o = bpf_map_lookup_elem(&by_cookie, &cookie);
		if (!o)
			break;
		// The client's local address is the remote address the proxy sees
		// on accept; the proxy's own socket cookie differs from ours.
		local_key(skops, &k);
		bpf_map_update_elem(&by_addr, &k, o, BPF_ANY);
		count(STAT_ESTABLISHED);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		cookie = bpf_get_socket_cookie(skops);
		if (!bpf_map_lookup_elem(&by_cookie, &cookie))
			break;
		local_key(skops, &k);
		// Only remove the address entry if it is still ours: a new socket
		// may already reuse the port.
		o = bpf_map_lookup_elem(&by_addr, &k);
		if (o && o->cookie == cookie)
			bpf_map_delete_elem(&by_addr, &k);
		bpf_map_delete_elem(&by_cookie, &cookie);
		count(STAT_CLOSED);
		break;
	}
	return 1;
}

SEC("cgroup/getpeername4")
int intransit_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig *o = bpf_map_lookup_elem(&by_cookie, &cookie);
	if (!o)
		return 1;
	__be32 ip4;
	__builtin_memcpy(&ip4, &o->addr[12], 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = o->port;
	return 1;
}

SEC("cgroup/getpeername6")
int intransit_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig *o = bpf_map_lookup_elem(&by_cookie, &cookie);
	if (!o)
		return 1;
	__u32 ip6[4];
	__builtin_memcpy(ip6, o->addr, 16);
	ctx->user_ip6[0] = ip6[0];
	ctx->user_ip6[1] = ip6[1];
	ctx->user_ip6[2] = ip6[2];
	ctx->user_ip6[3] = ip6[3];
	ctx->user_port = o->port;
	return 1;
}

// The loopback device has this ifindex in every network namespace.
#define LOOPBACK_IFINDEX 1
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

// Executor hosts: plaintext TCP reaching an inbound service port from off
// the host is reported (audit) or dropped (enforce). The local agent forwards
// over loopback, so loopback traffic passes. Only SYNs are reported, one
// event per attempt rather than per packet.
SEC("cgroup_skb/ingress")
int intransit_ingress(struct __sk_buff *skb)
{
	__u32 proto = skb->protocol;
	__u32 ifindex = skb->ingress_ifindex;
	if (ifindex == LOOPBACK_IFINDEX)
		return 1;

	__u8 l4 = 0;
	__u32 l4off = 0;
	__u8 peer[16] = {};
	__u16 family = 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 vihl;
		if (bpf_skb_load_bytes(skb, 0, &vihl, 1) < 0)
			return 1;
		if (bpf_skb_load_bytes(skb, 9, &l4, 1) < 0)
			return 1;
		__be32 saddr;
		if (bpf_skb_load_bytes(skb, 12, &saddr, 4) < 0)
			return 1;
		set_mapped4(peer, saddr);
		l4off = (vihl & 0x0f) * 4;
		family = AF_INET;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		// No extension headers: TCP follows the fixed header directly.
		if (bpf_skb_load_bytes(skb, 6, &l4, 1) < 0)
			return 1;
		if (bpf_skb_load_bytes(skb, 8, peer, 16) < 0)
			return 1;
		l4off = 40;
		family = AF_INET6;
	} else {
		return 1;
	}
	if (l4 != IPPROTO_TCP || l4off < 20 || l4off > 60)
		return 1;

	__u8 tcp[14];
	if (bpf_skb_load_bytes(skb, l4off, tcp, sizeof(tcp)) < 0)
		return 1;
	__u16 dport = ((__u16)tcp[2] << 8) | tcp[3];
	struct service_val *svc = bpf_map_lookup_elem(&services_map, &dport);
	if (!svc)
		return 1;

	__u32 mode = svc->mode;
	__u8 flags = tcp[13];
	if ((flags & TCP_FLAG_SYN) && !(flags & TCP_FLAG_ACK)) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (e) {
			__builtin_memset(e, 0, sizeof(*e));
			e->ts_ns = bpf_ktime_get_ns();
			e->verdict = mode == MODE_ENFORCE ? VERDICT_INGRESS_DROP : VERDICT_INGRESS_AUDIT;
			e->service_id = svc->service_id;
			__builtin_memcpy(e->peer_addr, peer, 16);
			__builtin_memcpy(&e->peer_port, &tcp[0], 2);
			e->local_port = dport;
			e->family = family;
			bpf_ringbuf_submit(e, 0);
		} else {
			count(STAT_EVENTS_LOST);
		}
		count(mode == MODE_ENFORCE ? STAT_INGRESS_DROP : STAT_INGRESS_AUDIT);
	}
	return mode == MODE_ENFORCE ? 0 : 1;
}

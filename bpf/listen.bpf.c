//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * listen.bpf.c: what happens at TCP listening sockets, per listening port.
 *
 *   cel_listen_drop  tp_btf/kfree_skb       the kernel dropped a packet and
 *       names a TCP socket in LISTEN as the one it was for -> CEL_LISTEN_DROP.
 *       In practice: the handshake's last ACK (or a syncookie ACK) refused
 *       because the accept queue is full (TcpExtListenOverflows at ACK time).
 *   cel_listen_enq   tp_btf/sk_data_ready   a listener is woken because a
 *       handshake completed and the child was queued for accept() ->
 *       CEL_LISTEN_QUEUED; and CEL_LISTEN_FULL when that child filled the
 *       queue (sk_ack_backlog > sk_max_ack_backlog), i.e. SYNs arriving
 *       before the next accept() are dropped.
 *
 * Why not fentry/tcp_conn_request (a SYN meeting a full accept queue) and
 * fexit/inet_csk_accept (accept() returned): this kernel refuses every
 * trampoline-based program (fentry, fexit, fmod_ret, lsm) with EPERM at
 * load, and there are no kprobes (CONFIG_KPROBES unset). A SYN dropped
 * because the accept queue is full passes no tracepoint (tcp_listendrop() is
 * inline and the SYN is freed with consume_skb); local clients see it as a
 * resent SYN: tcp.bpf.c's CEL_TCP_SYN_RETRANS. accept() itself passes only
 * the syscall tracepoints, which cost every syscall on the node ~100 ns
 * (measured; bpf/README.md), so children queued are counted instead.
 *
 * Map cel_listen_cnt: PERCPU_HASH struct cel_port_key -> __u64, port = the
 * listener's local port.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, CEL_PORT_ENTRIES);
	__type(key, struct cel_port_key);
	__type(value, __u64);
} cel_listen_cnt SEC(".maps");

/*
 * Tracepoint arguments are trusted kernel pointers: fields are read with
 * plain (CO-RE relocated) loads, no bpf_probe_read_kernel calls.
 */
static __always_inline bool tcp_listener(const struct sock *sk)
{
	return sk->__sk_common.skc_state == TCP_LISTEN && sk->sk_protocol == IPPROTO_TCP;
}

/*
 * Newer kernels name the receiving socket (rx_sk) in kfree_skb's fourth
 * argument; before, the listener was nowhere (a SYN or ACK is not charged
 * to it). The tracepoint's record gained an rx_sk field in the same change:
 * testing for that field is constant-folded at load, so older kernels load
 * the program, never read the argument, and count nothing.
 */
struct trace_event_raw_kfree_skb___rx_sk {
	void *rx_sk;
} __attribute__((preserve_access_index));

SEC("tp_btf/kfree_skb")
int BPF_PROG(cel_listen_drop, struct sk_buff *skb, void *location)
{
	struct sock *sk;

	if (!bpf_core_field_exists(struct trace_event_raw_kfree_skb___rx_sk, rx_sk))
		return 0;
	sk = (struct sock *)ctx[3];
	if (!sk || !tcp_listener(sk))
		return 0;
	cel_count(&cel_listen_cnt, sk->__sk_common.skc_num, CEL_LISTEN_DROP);
	return 0;
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(cel_listen_enq, const struct sock *sk)
{
	__u16 port;

	if (!tcp_listener(sk))
		return 0;
	port = sk->__sk_common.skc_num;
	cel_count(&cel_listen_cnt, port, CEL_LISTEN_QUEUED);
	if (sk->sk_ack_backlog > sk->sk_max_ack_backlog)
		cel_count(&cel_listen_cnt, port, CEL_LISTEN_FULL);
	return 0;
}

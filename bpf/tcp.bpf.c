//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp.bpf.c: TCP retransmissions and resets, counted per local port.
 *
 * Hooks (BTF tracepoints: no tracefs, no kprobes, no trampolines):
 *   cel_tcp_retrans  tp_btf/tcp_retransmit_skb  kind CEL_TCP_RETRANS, adding
 *                    the segments the skb carries (as TcpRetransSegs does), or
 *                    CEL_TCP_SYN_RETRANS keyed by the REMOTE port when the
 *                    socket is still connecting (its local port is ephemeral
 *                    and says nothing; the remote one names the service that
 *                    did not answer, often a listener whose queue is full)
 *   cel_tcp_rst_tx   tp_btf/tcp_send_reset      kind CEL_TCP_RST_SENT
 *   cel_tcp_rst_rx   tp_btf/tcp_receive_reset   kind CEL_TCP_RST_RECV
 *
 * Map cel_tcp_counts: PERCPU_HASH struct cel_port_key -> __u64.
 * Map cel_tcp_events: RINGBUF of struct cel_port_key, one record per event.
 *   It only wakes user space (these events are rare, and a reader waiting
 *   on it learns of one within microseconds instead of at its next poll);
 *   the counts stay in the per-CPU map. A full ring drops records, never
 *   counts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "cel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, CEL_PORT_ENTRIES);
	__type(key, struct cel_port_key);
	__type(value, __u64);
} cel_tcp_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} cel_tcp_events SEC(".maps");

/* notify wakes a reader of cel_tcp_events with (port, kind). */
static __always_inline void notify(__u16 port, __u8 kind)
{
	struct cel_port_key ev = { .port = port, .kind = kind, .pad = 0 };

	bpf_ringbuf_output(&cel_tcp_events, &ev, sizeof(ev), 0);
}

/*
 * Tracepoint arguments are trusted kernel pointers: their fields are read
 * with plain (CO-RE relocated) loads; bpf_probe_read_kernel (BPF_CORE_READ)
 * only where a pointer is cast to another type.
 */

/*
 * A socket's local port. A socket aborted on close (SO_LINGER 0) is moved to
 * CLOSE and unhashed before its RST goes out, which zeroes inet_num
 * (skc_num) but leaves inet_sport.
 */
static __always_inline __u16 local_port(const struct sock *sk)
{
	__u16 port = sk->__sk_common.skc_num;

	if (port)
		return port;
	return bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
}

/* tcp_skb_pcount(): the segments a (GSO) skb stands for. */
static __always_inline __u64 skb_segs(const struct sk_buff *skb)
{
	const struct tcp_skb_cb *cb = (const struct tcp_skb_cb *)skb->cb;
	__u16 segs = BPF_CORE_READ(cb, tcp_gso_segs);

	return segs ? segs : 1;
}

/*
 * Newer kernels pass the result of the attempt as a third argument and fire
 * the tracepoint for failed attempts too (e.g. -EBUSY while the previous
 * copy is still queued); the tracepoint's record gained an err field in the
 * same change. Testing for that field is constant-folded at load, so older
 * kernels never see the third-argument read.
 */
struct trace_event_raw_tcp_retransmit_skb___err {
	int err;
} __attribute__((preserve_access_index));

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(cel_tcp_retrans, const struct sock *sk, const struct sk_buff *skb)
{
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb___err, err) &&
	    (int)ctx[2] != 0)
		return 0;
	if (sk->__sk_common.skc_state == TCP_SYN_SENT) {
		cel_count(&cel_tcp_counts, bpf_ntohs(sk->__sk_common.skc_dport), CEL_TCP_SYN_RETRANS);
		notify(bpf_ntohs(sk->__sk_common.skc_dport), CEL_TCP_SYN_RETRANS);
		return 0;
	}
	cel_add(&cel_tcp_counts, local_port(sk), CEL_TCP_RETRANS, skb_segs(skb));
	notify(local_port(sk), CEL_TCP_RETRANS);
	return 0;
}

/*
 * A RST is sent either by a socket (sk set; skb is NULL for an active reset)
 * or in answer to a segment no socket wanted (sk NULL): then the local port
 * is that segment's destination port.
 */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(cel_tcp_rst_tx, const struct sock *sk, const struct sk_buff *skb)
{
	struct tcphdr th;
	unsigned char *head;
	__u16 off;

	if (sk) {
		cel_count(&cel_tcp_counts, local_port(sk), CEL_TCP_RST_SENT);
		notify(local_port(sk), CEL_TCP_RST_SENT);
		return 0;
	}
	if (!skb)
		return 0;
	head = skb->head;
	off = skb->transport_header;
	if (bpf_probe_read_kernel(&th, sizeof(th), head + off))
		return 0;
	cel_count(&cel_tcp_counts, bpf_ntohs(th.dest), CEL_TCP_RST_SENT);
	notify(bpf_ntohs(th.dest), CEL_TCP_RST_SENT);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(cel_tcp_rst_rx, struct sock *sk)
{
	cel_count(&cel_tcp_counts, local_port(sk), CEL_TCP_RST_RECV);
	notify(local_port(sk), CEL_TCP_RST_RECV);
	return 0;
}

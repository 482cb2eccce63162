/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cel.h: what the Celluster BPF programs share: the per-port key, the event
 * kinds and the helpers that count into per-CPU maps.
 *
 * Every map a program writes is documented in bpf/README.md with its exact
 * byte layout; change the two together.
 */
#ifndef CEL_H
#define CEL_H

/*
 * Counted per (local port, kind). Four bytes, no implicit padding: the
 * explicit pad byte is always zero, so user space can build keys byte by
 * byte. port is in host byte order (little-endian on bpfel).
 */
struct cel_port_key {
	__u16 port;
	__u8 kind;
	__u8 pad;
};

/*
 * Values of cel_port_key.kind, unique across all the programs. The port is
 * the socket's local port except for CEL_TCP_SYN_RETRANS. 4 to 7 are
 * reserved for the fentry/fexit kinds of the first design (SYN dropped on a
 * full accept queue, SYN queue full, ACK dropped on a full accept queue,
 * accept() returned), which this kernel cannot load; they keep those
 * meanings if a trampoline-capable variant ever ships.
 */
enum cel_kind {
	CEL_TCP_RETRANS = 1,	 /* a segment was retransmitted */
	CEL_TCP_RST_SENT = 2,	 /* a RST was sent */
	CEL_TCP_RST_RECV = 3,	 /* a RST was received */
	CEL_TCP_SYN_RETRANS = 8, /* a connect()ing socket resent its SYN; port = REMOTE port */
	CEL_LISTEN_DROP = 9,	 /* the kernel dropped a packet at a listening socket */
	CEL_LISTEN_QUEUED = 10,	 /* a handshake completed: a child was queued for accept() */
	CEL_LISTEN_FULL = 11,	 /* that child filled the accept queue */
};

/* Room for every port with a few kinds each; when full, new keys are not counted. */
#define CEL_PORT_ENTRIES 16384

/* log2 histogram slots (see cel_log2_slot). */
#define CEL_HIST_SLOTS 32

/*
 * cel_add adds n to key (port, kind) in a BPF_MAP_TYPE_PERCPU_HASH of
 * struct cel_port_key -> __u64. The value is this CPU's, so a plain
 * addition is exact.
 */
static __always_inline void cel_add(void *map, __u16 port, __u8 kind, __u64 n)
{
	struct cel_port_key key = { .port = port, .kind = kind, .pad = 0 };
	__u64 *v;

	v = bpf_map_lookup_elem(map, &key);
	if (v) {
		*v += n;
		return;
	}
	if (bpf_map_update_elem(map, &key, &n, BPF_NOEXIST) == 0)
		return;
	/* Another CPU inserted the key first: add to our slot of it. */
	v = bpf_map_lookup_elem(map, &key);
	if (v)
		*v += n;
}

static __always_inline void cel_count(void *map, __u16 port, __u8 kind)
{
	cel_add(map, port, kind, 1);
}

static __always_inline __u32 cel_log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

/*
 * cel_log2_slot maps v to a histogram slot: 0 for v == 0, else
 * floor(log2(v)) + 1, capped at CEL_HIST_SLOTS-1. Slot k in 1..30 holds
 * values in [2^(k-1), 2^k); slot 31 holds everything >= 2^30.
 */
static __always_inline __u32 cel_log2_slot(__u64 v)
{
	__u32 hi = v >> 32, slot;

	if (v == 0)
		return 0;
	if (hi)
		slot = cel_log2_u32(hi) + 32 + 1;
	else
		slot = cel_log2_u32((__u32)v) + 1;
	if (slot > CEL_HIST_SLOTS - 1)
		slot = CEL_HIST_SLOTS - 1;
	return slot;
}

/* cel_hist_add adds one to slot in a BPF_MAP_TYPE_PERCPU_ARRAY of __u64. */
static __always_inline void cel_hist_add(void *map, __u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(map, &slot);

	if (v)
		*v += 1;
}

#endif /* CEL_H */

//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bench.bpf.c: the two ways to get a hot-path event to user space, on the
 * same event source, for core/ebpf's BenchmarkEventPath. Not shipped.
 *
 * Both fire on tp_btf/sys_enter for one syscall (bench_nr) of one process
 * (bench_tgid) and take a timestamp:
 *   bench_percpu   adds it to a log2 histogram in a per-CPU array (what
 *                  runq.bpf.c does); user space reads 32 slots when it likes.
 *   bench_ringbuf  sends it as a 16-byte record through a ring buffer; user
 *                  space reads every record and builds the histogram itself.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "cel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 bench_tgid = 0;
const volatile __s64 bench_nr = -1;

struct bench_event {
	__u64 ns;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CEL_HIST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} bench_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} bench_events SEC(".maps");

/* Records the ring buffer had no room for. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bench_lost SEC(".maps");

static __always_inline bool mine(long id)
{
	return id == bench_nr && (bpf_get_current_pid_tgid() >> 32) == bench_tgid;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_percpu, struct pt_regs *regs, long id)
{
	if (!mine(id))
		return 0;
	cel_hist_add(&bench_hist, cel_log2_slot((bpf_ktime_get_ns() & 0xFFFFF) / 1000));
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_ringbuf, struct pt_regs *regs, long id)
{
	struct bench_event *e;

	if (!mine(id))
		return 0;
	e = bpf_ringbuf_reserve(&bench_events, sizeof(*e), 0);
	if (!e) {
		cel_hist_add(&bench_lost, 0);
		return 0;
	}
	e->ns = bpf_ktime_get_ns();
	e->tgid = bench_tgid;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

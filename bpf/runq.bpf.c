//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * runq.bpf.c: run-queue latency, the time from a thread becoming runnable to
 * it running, as log2 histograms in microseconds.
 *
 *   cel_runq_wakeup  tp_btf/sched_wakeup      stamp the woken thread
 *   cel_runq_wnew    tp_btf/sched_wakeup_new  stamp a new thread
 *   cel_runq_switch  tp_btf/sched_switch      stamp a preempted prev (it
 *                    stays runnable); for next, take its stamp, add
 *                    now - stamp to the histograms
 *
 * Maps:
 *   cel_runq_start  TASK_STORAGE  per thread: __u64 ktime ns of the stamp
 *                   (0: none). Freed with the thread, never full; user
 *                   space cannot list it.
 *   cel_runq_node   PERCPU_ARRAY __u32 slot -> __u64 count, every thread
 *   cel_runq_tgid   PERCPU_ARRAY __u32 slot -> __u64 count, threads whose
 *                   tgid is target_tgid (nothing when it is 0)
 * Slots as cel_log2_slot() on the latency in whole microseconds.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The process whose threads get a histogram of their own (celcore): a
 * kernel (init pid namespace) tgid, set by the loader. */
const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} cel_runq_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CEL_HIST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} cel_runq_node SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CEL_HIST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} cel_runq_tgid SEC(".maps");

/*
 * Tracepoint arguments are trusted kernel pointers: fields are read with
 * plain (CO-RE relocated) loads, no bpf_probe_read_kernel calls.
 */
static __always_inline void stamp(struct task_struct *p, __u64 now)
{
	__u64 *ts;

	if (!p->pid) /* the idle task */
		return;
	ts = bpf_task_storage_get(&cel_runq_start, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		*ts = now;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(cel_runq_wakeup, struct task_struct *p)
{
	stamp(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(cel_runq_wnew, struct task_struct *p)
{
	stamp(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(cel_runq_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns(), *ts, delta;
	__u32 slot;

	/* Preempted, or yielded while runnable: it waits on the run queue. */
	if (preempt || prev_state == 0 /* TASK_RUNNING */)
		stamp(prev, now);

	if (!next->pid)
		return 0;
	ts = bpf_task_storage_get(&cel_runq_start, next, 0, 0);
	if (!ts || !*ts)
		return 0;
	delta = now > *ts ? now - *ts : 0;
	*ts = 0;

	slot = cel_log2_slot(delta / 1000);
	cel_hist_add(&cel_runq_node, slot);
	if (target_tgid && next->tgid == target_tgid)
		cel_hist_add(&cel_runq_tgid, slot);
	return 0;
}

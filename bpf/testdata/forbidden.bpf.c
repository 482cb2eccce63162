//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * forbidden.bpf.c: an object the loader must refuse whole (core/ebpf's
 * allow-list test): one allowed program beside a kprobe, an XDP program and
 * an fentry on a target not on the list. Not shipped; never attached.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sched_switch")
int BPF_PROG(cel_ok_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return 0;
}

SEC("kprobe/do_sys_openat2")
int cel_kprobe(void *ctx)
{
	return 0;
}

SEC("xdp")
int cel_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("fentry/do_sys_openat2")
int BPF_PROG(cel_fentry_open)
{
	return 0;
}

// Package kernel is the kernel telemetry plugin: it ships the BPF objects
// built from ../../bpf (see bpf/README.md for the programs and their maps),
// which the core's eBPF loader loads, attaches and pins.
package kernel

// The objects are generated (and committed) so that `go build` needs no
// clang: `go generate ./plugins/kernel` (or `make generate`) rebuilds them
// with the pinned compiler; the result is byte-for-byte reproducible.
//
//go:generate go tool bpf2go -tags linux -cc clang-16 -target bpfel -cflags "-O2 -g -Wall -Werror" tcp ../../bpf/tcp.bpf.c -- -I../../bpf -I../../bpf/headers
//go:generate go tool bpf2go -tags linux -cc clang-16 -target bpfel -cflags "-O2 -g -Wall -Werror" listen ../../bpf/listen.bpf.c -- -I../../bpf -I../../bpf/headers
//go:generate go tool bpf2go -tags linux -cc clang-16 -target bpfel -cflags "-O2 -g -Wall -Werror" runq ../../bpf/runq.bpf.c -- -I../../bpf -I../../bpf/headers

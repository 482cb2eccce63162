// Package testobj holds BPF objects that only core/ebpf's tests and
// benchmark use (sources in bpf/testdata): they are not shipped.
package testobj

//go:generate go tool bpf2go -tags linux -cc clang-16 -target bpfel -cflags "-O2 -g -Wall -Werror" bench ../../../../bpf/testdata/bench.bpf.c -- -I../../../../bpf -I../../../../bpf/headers
//go:generate go tool bpf2go -tags linux -cc clang-16 -target bpfel -cflags "-O2 -g -Wall -Werror" forbidden ../../../../bpf/testdata/forbidden.bpf.c -- -I../../../../bpf -I../../../../bpf/headers

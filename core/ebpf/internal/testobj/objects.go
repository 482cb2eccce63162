//go:build (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm) && linux

package testobj

// Bench is the ELF of bench.bpf.c: bench_percpu and bench_ringbuf on
// tp_btf/sys_enter (not on the default allow-list).
func Bench() []byte { return _BenchBytes }

// Forbidden is the ELF of forbidden.bpf.c: cel_ok_switch (allowed),
// cel_kprobe, cel_xdp and cel_fentry_open (not allowed).
func Forbidden() []byte { return _ForbiddenBytes }

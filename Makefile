# Celluster build. `make run` serves the example cells; `make test` proves it.
SHELL       := /bin/bash
GO          ?= go
BIN         := bin
CELLS_SRC   := $(sort $(wildcard examples/cells/*))
CELLS       := $(patsubst examples/cells/%,$(BIN)/cells/%.wasm,$(CELLS_SRC))
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
TEST_TIMEOUT ?= 16m
BENCH_TIME  ?= 1s
PROTOC      ?= protoc
# Go modules of their own inside this tree (the SDK, the plugin API, the
# third-party example plugin): the root module builds against them through
# replace directives; each is tested, vetted and benchmarked from its dir.
MODULES     := pluginapi/cellabi pluginapi sdk/cell sdk/plugin examples/plugins/logtail

.PHONY: all build run test bench bench-once soak sim fleet fleet-deps generate lint clean cells fuzz api-image protoc deps bpf-toolchain c-toolchain

all: build

build: $(BIN)/celcore $(BIN)/celctl cells

$(BIN)/celcore: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/celcore

$(BIN)/celctl: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/celctl

cells: $(CELLS)

# C cells: a directory holding .c files and no Go files is built with clang
# against wasi-libc (Debian: clang-16, lld-16 for wasm-ld, wasi-libc and
# libclang-rt-16-dev-wasm32, installed by c-toolchain when missing and root)
# — a reactor when a source includes sdk/c/cel.h, a plain WASI command
# otherwise. Without the toolchain a C cell is skipped with a warning (an
# error under CI=true).
WASM_CC      ?= clang-16
WASI_SYSROOT ?= /usr
WASM_CFLAGS  ?= -O2 -Wall -Wextra -Werror
C_PKGS       := clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32
C_PROBE       = printf 'int cel_probe;\n' | $(WASM_CC) --target=wasm32-wasi --sysroot=$(WASI_SYSROOT) -mexec-model=reactor -x c - -o /dev/null 2>/dev/null
$(CELLS): | c-toolchain

# A Go cell that imports sdk/cell is a reactor (c-shared, exports
# cel_handle); any other is a plain WASI command.
$(BIN)/cells/%.wasm: FORCE
	@mkdir -p $(BIN)/cells
	@if ls examples/cells/$*/*.c >/dev/null 2>&1 && ! ls examples/cells/$*/*.go >/dev/null 2>&1; then \
		model=command; if grep -qs 'cel\.h' examples/cells/$*/*.c; then model=reactor; fi; \
		if ! { $(C_PROBE); }; then \
			if [ "$$CI" = true ]; then echo "error: $(WASM_CC) cannot build wasm32-wasi reactors (apt-get install $(C_PKGS)); cell $* not built"; exit 1; fi; \
			echo "warning: $(WASM_CC) cannot build wasm32-wasi reactors (apt-get install $(C_PKGS), or make deps as root): C cell $* skipped"; exit 0; \
		fi; \
		echo "$(WASM_CC) --target=wasm32-wasi --sysroot=$(WASI_SYSROOT) $(WASM_CFLAGS) -mexec-model=$$model -Isdk/c -o $@ examples/cells/$*/*.c"; \
		$(WASM_CC) --target=wasm32-wasi --sysroot=$(WASI_SYSROOT) $(WASM_CFLAGS) -mexec-model=$$model -Isdk/c -o $@.tmp examples/cells/$*/*.c; \
	elif $(GO) list -f '{{join .Imports " "}}' ./examples/cells/$* | grep -q 'celluster/sdk/cell'; then \
		echo "GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o $@ ./examples/cells/$*"; \
		GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $@.tmp ./examples/cells/$*; \
	else \
		echo "GOOS=wasip1 GOARCH=wasm go build -o $@ ./examples/cells/$*"; \
		GOOS=wasip1 GOARCH=wasm $(GO) build -o $@.tmp ./examples/cells/$*; \
	fi && mv $@.tmp $@
	@if [ -f examples/cells/$*/$*.intent ]; then cp examples/cells/$*/$*.intent $(BIN)/cells/$*.intent; fi

run: build
	$(BIN)/celcore --cells $(BIN)/cells --ui 127.0.0.1:8090

# Tools the kernel, metrics and web view tests use (Debian packages): nft
# for packet loss in test namespaces, ip for the namespaces, bpftool to list
# programs, promtool to check the metrics endpoint, chromium (headless) to
# drive the web view. Installed when missing and root.
TEST_TOOLS := nft ip bpftool promtool openssl chromium
TEST_PKGS  := nftables iproute2 bpftool prometheus openssl chromium
deps: c-toolchain
	@missing=""; for t in $(TEST_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing: $(TEST_PKGS)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_PKGS) >/dev/null; \
		else \
			echo "warning: missing$$missing (apt-get install $(TEST_PKGS)); the tests that need them skip unless CI=true"; \
		fi; \
	fi

# The MODULES are tested from their own dirs.
# The membership simulation is built without -race (see core/fabric/sim_test.go).
# Every benchmark then runs once (bench-once), so that none can rot unseen.
test: deps
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -count=1 -timeout 10m ./core/wasm
	$(GO) test -count=1 -run '^TestMembershipSimulation$$' -timeout 10m ./core/fabric
	@set -e; for m in $(MODULES); do echo "cd $$m && $(GO) test -race ./..."; (cd $$m && $(GO) test -race -timeout $(TEST_TIMEOUT) ./...); done
	$(MAKE) --no-print-directory bench-once

# Each benchmark once, without the race detector (it would time the detector):
# proves they all still run and hold their own checks, not how fast they are.
bench-once:
	$(GO) test -short -run '^$$' -bench . -benchtime 1x -count 1 -timeout 10m ./...
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -short -run '^$$' -bench . -benchtime 1x -count 1 -timeout 10m ./...); done

# Fuzz every parser and decoder for FUZZTIME each; crashers land in testdata.
FUZZTIME ?= 30s
fuzz:
	cd pluginapi/cellabi && $(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) .
	cd pluginapi/cellabi && $(GO) test -run '^$$' -fuzz '^FuzzDecodeResponse$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzParseResponse$$' -fuzztime $(FUZZTIME) ./core/cgi
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequestFrame$$' -fuzztime $(FUZZTIME) ./core/mesh
	$(GO) test -run '^$$' -fuzz '^FuzzParseStatePush$$' -fuzztime $(FUZZTIME) ./core/mesh
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCatalog$$' -fuzztime $(FUZZTIME) ./core/mesh
	$(GO) test -run '^$$' -fuzz '^FuzzInstrument$$' -fuzztime $(FUZZTIME) ./core/wasm/instrument
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./plugins/intent
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./core/journal
	$(GO) test -run '^$$' -fuzz '^FuzzSection$$' -fuzztime $(FUZZTIME) ./core/intents
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./core/fabric/frame
	$(GO) test -run '^$$' -fuzz '^FuzzGossipPacket$$' -fuzztime $(FUZZTIME) ./core/fabric
	$(GO) test -run '^$$' -fuzz '^FuzzAnswerJoin$$' -fuzztime $(FUZZTIME) ./core/identity
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./core/wasm/snapshot
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePrepared$$' -fuzztime $(FUZZTIME) ./core/wasm
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeOffer$$' -fuzztime $(FUZZTIME) ./core/handover

# The membership simulation at scale: SIM_NODES members each (in one process,
# on an in-memory network, the fabric's membership settings, protocol time
# dilated SIM_DILATION times); prints a table. Each phase is bounded.
SIM_NODES    ?= 50,100,250,500,1000
SIM_DILATION ?= 10
sim:
	FABRIC_SIM=$(SIM_NODES) FABRIC_SIM_DILATION=$(SIM_DILATION) $(GO) test -count=1 -run '^TestMembershipSimulationLarge$$' -timeout 120m -v ./core/fabric | grep -v '^=== RUN'

# The fleet: FLEET_N real nodes (default 24) in a network namespace of their
# own, measured idle, under a CPU hog and through faults, against the aims;
# the report is printed and written to bin/fleet-report.txt (node logs in
# bin/fleet-logs). Not part of `make test`; it stops by itself. FLEET_QUICK=1
# is a short try (6 nodes, short windows); FLEET_HOG_TIME, FLEET_IDLE_TIME,
# FLEET_PARTITION_TIME and FLEET_HELLO_INTENT override the defaults.
FLEET_TIMEOUT ?= 60m
fleet-deps: deps
	@command -v stress-ng >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing stress-ng"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng >/dev/null; \
		else echo "warning: stress-ng missing: the CPU hog falls back to busy shell loops"; fi; }

fleet: fleet-deps
	@mkdir -p $(BIN)
	FLEET_N='$(FLEET_N)' FLEET_QUICK='$(FLEET_QUICK)' FLEET_HOG_TIME='$(FLEET_HOG_TIME)' FLEET_IDLE_TIME='$(FLEET_IDLE_TIME)' \
	FLEET_PARTITION_TIME='$(FLEET_PARTITION_TIME)' FLEET_REPORT='$(CURDIR)/$(BIN)/fleet-report.txt' FLEET_LOGS='$(CURDIR)/$(BIN)/fleet-logs' \
		$(GO) test -tags fleet -run '^TestFleet$$' -count=1 -v -timeout $(FLEET_TIMEOUT) ./cmd/celcore

# Benchmarks print as a table, each beside its peers (raw output in bin/bench.txt).
bench:
	@mkdir -p $(BIN)
	set -o pipefail; few='^(BenchmarkCompile|BenchmarkRestartFirstRequest|BenchmarkCloneToPeer|BenchmarkFailureDetection|BenchmarkReplicaMemory)$$'; paced='^BenchmarkKernelEventToRule$$'; \
	{ $(GO) test -run '^$$' -bench "$$few" -benchtime 5x -count 1 -timeout 30m ./...; s1=$$?; \
	  $(GO) test -run '^$$' -bench "$$paced" -benchtime 20x -count 1 -timeout 30m ./cmd/celcore; s3=$$?; \
	  $(GO) test -run '^$$' -bench . -skip "$$few|$$paced" -benchtime $(BENCH_TIME) -count 1 -timeout 30m ./...; s2=$$?; \
	  exit $$((s1 | s2 | s3)); } 2>&1 | tee $(BIN)/bench.txt
	@awk ' \
	function human(ns) { \
		if (ns >= 1e9) return sprintf("%.3gs", ns / 1e9); \
		if (ns >= 1e6) return sprintf("%.3gms", ns / 1e6); \
		if (ns >= 1e3) return sprintf("%.3gµs", ns / 1e3); \
		return sprintf("%.3gns", ns); \
	} \
	function num(v) { return v >= 1e4 ? sprintf("%.0f", v) : sprintf("%.4g", v); } \
	function ratio(r) { return r >= 100 ? sprintf("%.0f", r) : sprintf("%.3g", r); } \
	function width(s,   t) { t = s; return length(s) - gsub(/µ|×/, "", t); } \
	function pad(s, w,   n) { n = w - width(s); while (n-- > 0) s = " " s; return s; } \
	function rpad(s, w,   n) { n = w - width(s); while (n-- > 0) s = s " "; return s; } \
	/^pkg: / { pkg = $$2; sub(/^github.com\/celluster\/celluster\//, "", pkg); next } \
	/^Benchmark/ && NF >= 4 && $$2 ~ /^[0-9]+$$/ { \
		name = $$1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$$/, "", name); \
		row = pkg " " name; col = ""; \
		if (match(name, /\/[^\/]*$$/)) { row = pkg " " substr(name, 1, RSTART - 1); col = substr(name, RSTART + 1); } \
		if (!(row in seen)) { seen[row] = 1; rows[++nrows] = row; rowpkg[row] = pkg; } \
		if (!(pkg in haspkg)) { haspkg[pkg] = 1; pkgs[++npkgs] = pkg; } \
		if (!((row, col) in hascol)) { hascol[row, col] = 1; cols[row, ++ncols[row]] = col; } \
		for (i = 3; i < NF; i += 2) { \
			u = $$(i + 1); \
			if (u == "B/op" || u == "MB/s") continue; \
			if (!((row, u) in hasunit)) { hasunit[row, u] = 1; units[row, ++nunits[row]] = u; } \
			val[row, col, u] = $$i; \
		} \
	} \
	END { \
		for (i = 2; i <= npkgs; i++) for (j = i; j > 1 && pkgs[j - 1] > pkgs[j]; j--) { t = pkgs[j]; pkgs[j] = pkgs[j - 1]; pkgs[j - 1] = t; } \
		print "\nEach benchmark beside its peers; (N×) is the value relative to the first column. Raw output: $(BIN)/bench.txt"; \
		for (pi = 1; pi <= npkgs; pi++) { \
			p = pkgs[pi]; printf "\n%s\n", p; \
			for (r = 1; r <= nrows; r++) { \
				k = rows[r]; if (rowpkg[k] != p) continue; \
				for (j = 1; j <= ncols[k]; j++) { \
					c = cols[k, j]; w[j] = width(c); \
					for (u = 1; u <= nunits[k]; u++) { \
						un = units[k, u]; \
						if (!((k, c, un) in val)) { cell[j, u] = "-"; continue; } \
						v = val[k, c, un]; base = val[k, cols[k, 1], un]; \
						s = un == "ns/op" ? human(v) : num(v); \
						if (j > 1 && base > 0) s = s " (" ratio(v / base) "×)"; \
						cell[j, u] = s; if (width(s) > w[j]) w[j] = width(s); \
					} \
				} \
				line = rpad("  " substr(k, length(p) + 2), 30); \
				for (j = 1; j <= ncols[k]; j++) line = line "  " pad(cols[k, j], w[j]); \
				print line; \
				for (u = 1; u <= nunits[k]; u++) { \
					un = units[k, u]; line = rpad("    " (un == "ns/op" ? "time/op" : un), 30); \
					for (j = 1; j <= ncols[k]; j++) line = line "  " pad(cell[j, u], w[j]); \
					print line; \
				} \
			} \
		} \
	}' $(BIN)/bench.txt

# A bounded soak of one node (default 10 minutes): mixed load through hello,
# counter, echo, slow and front; hello upgraded every minute, slow's intent
# edited every 20s, a plugin process killed every 45s. Prints a report
# (failed requests; RSS, descriptor and goroutine trends) and fails on a
# failed request, a leak or a plugin process left behind.
SOAK_TIME    ?= 10m
SOAK_CLIENTS ?= 4
soak:
	SOAK_TIME=$(SOAK_TIME) SOAK_CLIENTS=$(SOAK_CLIENTS) $(GO) test -tags soak -run '^TestSoak$$' -count 1 -v -timeout 3h ./cmd/celcore

PROTO_PLUGINS := --plugin=protoc-gen-go=$(BIN)/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/tools/protoc-gen-go-grpc

# protoc comes from Debian's protobuf-compiler; installed here when missing.
protoc:
	@command -v $(PROTOC) >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }

# The BPF objects are built by bpf2go with Debian's clang-16 (pinned in the
# //go:generate lines) against libbpf's headers.
bpf-toolchain:
	@{ command -v clang-16 >/dev/null && [ -f /usr/include/bpf/bpf_helpers.h ]; } || \
		{ apt-get update -qq && apt-get install -y -qq clang-16 llvm-16 libbpf-dev; }

generate: protoc bpf-toolchain $(BIN)/tools/protoc-gen-go $(BIN)/tools/protoc-gen-go-grpc
	$(PROTOC) -I core/admin/adminpb -I /usr/include $(PROTO_PLUGINS) \
		--go_out=paths=source_relative:core/admin/adminpb --go-grpc_out=paths=source_relative:core/admin/adminpb \
		admin.proto
	$(PROTOC) -I . -I /usr/include $(PROTO_PLUGINS) \
		--go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. \
		pluginapi/v1/*.proto
	$(GO) generate ./...

# Freeze the plugin API as it is now: run after adding (never changing)
# fields, methods or messages; the compatibility test compares against it.
api-image: protoc
	$(PROTOC) -I . -I /usr/include --descriptor_set_out=pluginapi/v1/image.binpb pluginapi/v1/*.proto

$(BIN)/tools/protoc-gen-go: go.mod
	$(GO) build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

$(BIN)/tools/protoc-gen-go-grpc: go.mod
	$(GO) build -o $@ google.golang.org/grpc/cmd/protoc-gen-go-grpc

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./examples/cells/...
	$(GO) tool staticcheck ./...
	$(GO) build -o $(BIN)/tools/staticcheck honnef.co/go/tools/cmd/staticcheck
	@set -e; for m in $(MODULES); do echo "cd $$m && go vet && staticcheck"; (cd $$m && $(GO) vet ./... && $(CURDIR)/$(BIN)/tools/staticcheck ./...); done
	cd pluginapi/cellabi && GOOS=wasip1 GOARCH=wasm $(GO) vet ./...
	cd sdk/cell && GOOS=wasip1 GOARCH=wasm $(GO) vet ./...
	cd pluginapi && $(GO) test -count=1 -run 'TestNoBreakingChanges' ./v1

clean:
	rm -rf $(BIN)

FORCE:

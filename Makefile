# Celluster build. `make run` serves the example cells; `make test` proves it.
SHELL       := /bin/bash
GO          ?= go
BIN         := bin
CELLS_SRC   := $(sort $(wildcard examples/cells/*))
CELLS       := $(patsubst examples/cells/%,$(BIN)/cells/%.wasm,$(CELLS_SRC))
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
TEST_TIMEOUT ?= 14m
BENCH_TIME  ?= 1x
PROTOC      ?= protoc

.PHONY: all build run test bench generate lint clean cells

all: build

build: $(BIN)/celcore $(BIN)/celctl cells

$(BIN)/celcore: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/celcore

$(BIN)/celctl: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/celctl

cells: $(CELLS)

# A cell that imports sdk/cell is a reactor (c-shared, exports cel_handle);
# any other is a plain WASI command.
$(BIN)/cells/%.wasm: FORCE
	@mkdir -p $(BIN)/cells
	@if $(GO) list -f '{{join .Imports " "}}' ./examples/cells/$* | grep -q 'celluster/sdk/cell'; then \
		echo "GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o $@ ./examples/cells/$*"; \
		GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $@.tmp ./examples/cells/$*; \
	else \
		echo "GOOS=wasip1 GOARCH=wasm go build -o $@ ./examples/cells/$*"; \
		GOOS=wasip1 GOARCH=wasm $(GO) build -o $@.tmp ./examples/cells/$*; \
	fi && mv $@.tmp $@

run: build
	$(BIN)/celcore --cells $(BIN)/cells

test:
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

# Benchmarks print as a table (benchstat); each sits beside its peer.
bench:
	@mkdir -p $(BIN)
	$(GO) test -run '^$$' -bench . -benchtime $(BENCH_TIME) -count 1 -timeout 30m ./... | tee $(BIN)/bench.txt
	@echo; $(GO) tool benchstat -table .fullname -row /peer,.unit $(BIN)/bench.txt 2>/dev/null || $(GO) tool benchstat $(BIN)/bench.txt

generate: $(BIN)/tools/protoc-gen-go $(BIN)/tools/protoc-gen-go-grpc
	$(PROTOC) -I core/admin/adminpb -I /usr/include \
		--plugin=protoc-gen-go=$(BIN)/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/tools/protoc-gen-go-grpc \
		--go_out=paths=source_relative:core/admin/adminpb --go-grpc_out=paths=source_relative:core/admin/adminpb \
		admin.proto
	$(GO) generate ./...

$(BIN)/tools/protoc-gen-go: go.mod
	$(GO) build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

$(BIN)/tools/protoc-gen-go-grpc: go.mod
	$(GO) build -o $@ google.golang.org/grpc/cmd/protoc-gen-go-grpc

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./sdk/... ./examples/... ./pluginapi/...
	$(GO) tool staticcheck ./...

clean:
	rm -rf $(BIN)

FORCE:

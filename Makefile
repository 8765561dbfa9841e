# CommuCat. `make run` starts a development server, `make test` runs every test.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin

.PHONY: all build test check fmt vet fuzz run clean bench

all: build

# Codecs (spec §7.6): scripts/ensure-codecs.sh installs libopus-dev and
# libvpx-dev when it can and otherwise says what to install; CODEC_TAGS
# then picks -tags=nocodecs (or noopus/novpx) so that a machine without
# them still builds, without transcoding (§7.9). By hand:
#   go build -tags nocodecs ./...    # without libopus and libvpx
#   CGO_ENABLED=0 go build ./...     # without cgo: no codecs either
CODEC_TAGS = $$(scripts/ensure-codecs.sh --tags)

build:
	@scripts/ensure-go.sh
	@scripts/ensure-codecs.sh
	$(GO) build $(CODEC_TAGS) -o $(BIN)/ ./cmd/...

# Every test, with the race detector, plus the static checks CI requires.
test: check
	@scripts/ensure-codecs.sh --test
	$(GO) test -race -count=1 $(CODEC_TAGS) ./...

check:
	@scripts/ensure-go.sh
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(CODEC_TAGS) ./...
	$(GO) vet -tags nocodecs ./...
	CGO_ENABLED=0 $(GO) build ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# Short fuzzing pass over every fuzz target (FUZZTIME per target).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run=NONE -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Development server: writes dev/commucat.toml (fresh keys, self-signed
# certificate, SQLite in dev/data) on first use, turns auto-approval on so
# new devices can connect without pairing, and starts the server.
DEV ?= dev
run: build
	@test -f $(DEV)/commucat.toml || $(BIN)/commucat-cli init --dir $(DEV) --bind 127.0.0.1:9443 >/dev/null
	@echo ""
	@echo "CommuCat development server: https://localhost:9443  (config $(DEV)/commucat.toml)"
	@echo "  landing page:  curl --cacert $(DEV)/certs/server.crt https://localhost:9443/"
	@echo "  chat:          $(BIN)/commucat-client --server https://localhost:9443 --ca $(DEV)/certs/server.crt --handle alice"
	@echo "                 (in a second terminal: --handle bob --profile bob; then /join <channel> <device id> and type)"
	@echo "  stop with Ctrl-C"
	@echo ""
	COMMUCAT_AUTO_APPROVE_DEVICES=true COMMUCAT_MAX_AUTO_DEVICES=0 $(BIN)/commucat-server --config $(DEV)/commucat.toml

# Load scenarios (BENCHMARKS.md) at moderate sizes against a server that
# commucat-bench starts itself; JSON results go to $(BENCH_OUT)/.
BENCH_OUT ?= bench-results
BENCH_DURATION ?= 10s
bench: build
	@mkdir -p $(BENCH_OUT)
	$(BIN)/commucat-bench handshake --version 2 --duration $(BENCH_DURATION) --concurrency 16 --json $(BENCH_OUT)/handshake-v2.json
	$(BIN)/commucat-bench handshake --version 2 --pq --duration $(BENCH_DURATION) --concurrency 16 --json $(BENCH_OUT)/handshake-v2-pq.json
	$(BIN)/commucat-bench relay --senders 16 --channel-size 2 --size 100 --duration $(BENCH_DURATION) --json $(BENCH_OUT)/relay-1to1.json
	$(BIN)/commucat-bench relay --senders 16 --channel-size 2 --size 100 --rate 20000 --duration $(BENCH_DURATION) --json $(BENCH_OUT)/relay-1to1-rate20k.json
	$(BIN)/commucat-bench idle --connections 2000 --json $(BENCH_OUT)/idle.json
	$(BIN)/commucat-bench inbox --messages 10000 --json $(BENCH_OUT)/inbox.json
	@echo "results in $(BENCH_OUT)/"

clean:
	rm -rf $(BIN)

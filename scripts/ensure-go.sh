#!/usr/bin/env bash
# Makes sure a Go toolchain of at least the version go.mod names is on PATH.
# It never downloads Go by itself: it says exactly what to install.
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
want=$(awk '/^go /{print $2; exit}' "$(dirname "$0")/../go.mod")
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go $want or newer is required: install it from https://go.dev/dl/ into /usr/local/go" >&2
  exit 1
fi
have=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
  echo "error: Go $want or newer is required, found $have: install it from https://go.dev/dl/ into /usr/local/go" >&2
  exit 1
fi

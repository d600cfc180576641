#!/usr/bin/env bash
# Regenerates the Go code of every .proto under proto/: `go generate ./proto/...`.
# protoc is Debian's (apt-get install protobuf-compiler: 3.21.12 on bookworm; its
# version is written into the output, so another one changes a header line); the
# plugins are built from the protobuf and connect modules at the versions go.mod
# pins, so the generator always matches the runtime library.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v protoc >/dev/null || { echo "gen.sh: protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go connectrpc.com/connect/cmd/protoc-gen-connect-go)
cd "$root/proto"
PATH="$bin:$PATH" protoc -I . \
  --go_out=. --go_opt=paths=source_relative \
  --connect-go_out=. --connect-go_opt=paths=source_relative \
  $(find . -name '*.proto' | sort)

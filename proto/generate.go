// Package proto holds the protobuf schemas of OmniRelay Mesh's gRPC services and
// their generated Go code; `go generate ./proto/...` regenerates it (gen.sh).
package proto

//go:generate bash gen.sh

//go:build omnirelay_preview

package main

import (
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// A preview build, `go build -tags omnirelay_preview ./cmd/omnirelay`, speaks
// versions 1..wire.PreviewVersion and advertises ack-health, so that a rolling
// upgrade of real agents onto a newer protocol can be rehearsed before one ships
// (docs/upgrading.md, the chaos suite's rolling-upgrade). No release is built
// with this tag.
func init() {
	previewTune = func(c *swim.Config) {
		c.Versions = wire.Versions{Min: 1, Max: wire.PreviewVersion}
		c.Features = wire.FeatureAckHealth
	}
}

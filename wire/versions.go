package wire

import (
	"fmt"
	"math/bits"
	"strings"
)

// PreviewVersion is a protocol version no release speaks: its layout is version
// 1's, and only test builds (swim.Config.ProtoMax) announce it, so mixed-version
// clusters, the sending-version rule and feature gating are exercised before a
// real version 2 exists (PROTOCOL.md section 7). It bounds what a node may be
// configured to speak: a header of any version up to it parses (the layout is
// known); whether the node accepts it is its Versions' business.
const PreviewVersion uint8 = 2

// Versions is a range of protocol versions a node speaks, Min..Max inclusive.
// The zero value stands for DefaultVersions wherever a Versions is configured.
type Versions struct{ Min, Max uint8 }

// DefaultVersions is what a release speaks: MinProtocolVersion..ProtocolVersion.
var DefaultVersions = Versions{MinProtocolVersion, ProtocolVersion}

// OrDefault is v, or DefaultVersions for the zero value (an unset Versions).
func (v Versions) OrDefault() Versions {
	if v == (Versions{}) {
		return DefaultVersions
	}
	return v
}

// Validate reports a range this build cannot speak: empty, inverted, or outside
// MinProtocolVersion..PreviewVersion.
func (v Versions) Validate() error {
	if v.Min < MinProtocolVersion || v.Min > v.Max || v.Max > PreviewVersion {
		return fmt.Errorf("protocol versions %d..%d: this build speaks a range within %d..%d", v.Min, v.Max, MinProtocolVersion, PreviewVersion)
	}
	return nil
}

// Speaks reports whether a member announcing protocol versions pmin..pmax (Alive,
// NodeState) can share a cluster with a node speaking v (PROTOCOL.md section 7):
// its range is valid (1 <= pmin <= pmax; 0 is no version, and a missing key reads
// as 0) and overlaps v. Every receiver checks it before adding or updating a
// member, so a node never holds a member it has no version in common with.
func (v Versions) Speaks(pmin, pmax uint8) bool {
	return pmin >= 1 && pmin <= pmax && pmin <= v.Max && pmax >= v.Min
}

// Check returns a *VersionError unless got is in v.
func (v Versions) Check(got uint8) error {
	if got < v.Min || got > v.Max {
		return &VersionError{Got: got, Min: v.Min, Max: v.Max}
	}
	return nil
}

// Features is a set of protocol features, one bit each, that a member advertises
// in Alive and NodeState (key "ft", PROTOCOL.md section 7). A feature is on in a
// node's view only while every live member there, itself included, advertises it.
// Bits only ever get assigned, never reused, like type numbers.
type Features uint64

const (
	// FeatureAckHealth: an Ack answering a direct Ping carries the responder's
	// local health score (Ack key "lh"), so the prober learns how loaded each
	// member it probes is. Test builds of PreviewVersion advertise it.
	FeatureAckHealth Features = 1 << 0

	// KnownFeatures is every feature this build implements; it advertises only
	// those it is configured to.
	KnownFeatures = FeatureAckHealth
)

var featureNames = [...]string{"ack-health"}

// Has reports whether every feature of want is in f.
func (f Features) Has(want Features) bool { return f&want == want }

// String names the features of f, comma-separated, unknown bits by number.
func (f Features) String() string {
	if f == 0 {
		return "none"
	}
	var names []string
	for f != 0 {
		b := bits.TrailingZeros64(uint64(f))
		f &^= 1 << b
		if b < len(featureNames) {
			names = append(names, featureNames[b])
		} else {
			names = append(names, fmt.Sprintf("bit%d", b))
		}
	}
	return strings.Join(names, ",")
}

package node

import (
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
)

// TestBuildInfoMetric: omnirelay_build_info is 1 with the binary's version, Go
// release and protocol range as labels.
func TestBuildInfoMetric(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := startMem(t, memConfig(t, NewMemNetwork(), "a", "10.0.0.1:0"))
		defer n.Close()
		b := BuildInfo()
		if b.Go != runtime.Version() || b.Protocol() != "1-1" || b.Version == "" {
			t.Errorf("BuildInfo() = %+v", b)
		}
		want := fmt.Sprintf(`omnirelay_build_info{go=%q,protocol=%q,version=%q} 1`, b.Go, b.Protocol(), b.Version)
		if got := metricLine(t, n, "omnirelay_build_info{"); got != want {
			t.Errorf("metric %q, want %q", got, want)
		}
	})
}

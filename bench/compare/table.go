package compare

import (
	"fmt"
	"io"
	"strings"
)

// WriteTable prints results as a Markdown table, then, per N, how our node compares
// with memberlist: join and crash speed-ups and the traffic ratio.
func WriteTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| impl | N | formation | join p50 / p95 / p100 | crash detected p50 / p95 / p100 | bytes/node/s: UDP + push-pull = total | packets/node/s | CPU ms/node/s |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %.0f + %.0f = %.0f | %.1f | %.3f |\n",
			r.Impl, r.N, secs(r.Formation), triple(r.Join), triple(r.Crash),
			r.UDPBytesPerNodeSec, r.PushPullBytesPerNodeSec, r.BytesPerNodeSec,
			r.PacketsPerNodeSec, 1000*r.CPUPerNodeSec)
	}
	byKey := map[string]Result{}
	var ns []int
	for _, r := range rs {
		byKey[fmt.Sprint(r.Impl, r.N)] = r
		if r.Impl == Memberlist {
			ns = append(ns, r.N)
		}
	}
	var lines []string
	for _, n := range ns {
		ml := byKey[fmt.Sprint(Memberlist, n)]
		for _, impl := range []string{NodeMemberlist, NodeLAN} {
			r, ok := byKey[fmt.Sprint(impl, n)]
			if !ok {
				continue
			}
			lines = append(lines, fmt.Sprintf("| %s | %d | %s / %s / %s | %s / %s | %s |", impl, n,
				ratio(ml.Join[0], r.Join[0]), ratio(ml.Join[1], r.Join[1]), ratio(ml.Join[2], r.Join[2]),
				ratio(ml.Crash[0], r.Crash[0]), ratio(ml.Crash[2], r.Crash[2]),
				ratio(r.BytesPerNodeSec, ml.BytesPerNodeSec)))
		}
	}
	if len(lines) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| vs memberlist | N | join speed-up p50 / p95 / p100 | crash speed-up p50 / p100 | bytes/node/s, ours / memberlist |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: |")
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	}
	writeWindowTable(w, rs)
}

// writeWindowTable prints what the steady window measured directly, UDP and TCP
// apart, and the cost of mutual TLS where both TLSImpls ran.
func writeWindowTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| steady window | N | s | UDP bytes/node/s | TCP bytes/node/s | streams/node/s | CPU ms/node/s |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	byKey := map[string]Result{}
	for _, r := range rs {
		byKey[fmt.Sprint(r.Impl, r.N)] = r
		fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.0f | %.3f | %.3f |\n", r.Impl, r.N, r.Window,
			r.UDPBytesPerNodeSec, r.TCPBytesPerNodeSec, r.StreamsPerNodeSec, 1000*r.CPUPerNodeSec)
	}
	for _, r := range rs {
		if r.Impl != NodeLANMTLS {
			continue
		}
		k, ok := byKey[fmt.Sprint(NodeLANKeys, r.N)]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "\nN=%d, mutual TLS over packet keys only: UDP %+.0f bytes/node/s, TCP %+.0f bytes/node/s, CPU %+.3f ms/node/s\n",
			r.N, r.UDPBytesPerNodeSec-k.UDPBytesPerNodeSec, r.TCPBytesPerNodeSec-k.TCPBytesPerNodeSec,
			1000*(r.CPUPerNodeSec-k.CPUPerNodeSec))
	}
}

func secs(s float64) string {
	switch {
	case s < 0:
		return "timeout"
	case s < 0.01:
		return fmt.Sprintf("%.1f ms", 1000*s)
	case s < 1:
		return fmt.Sprintf("%.0f ms", 1000*s)
	}
	return fmt.Sprintf("%.2f s", s)
}

func triple(q [3]float64) string {
	return secs(q[0]) + " / " + secs(q[1]) + " / " + secs(q[2])
}

// ratio is a/b, "n/a" when either is missing or b is zero. Speed-ups are
// memberlist's delay over ours (above 1: ours is faster); the bytes ratio is ours
// over memberlist's (below 1: ours sends less).
func ratio(a, b float64) string {
	if a < 0 || b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1fx", a/b)
}

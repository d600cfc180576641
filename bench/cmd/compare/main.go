// Command compare runs the loopback comparison of OmniRelay Mesh's node with
// hashicorp/memberlist v0.7.0 and prints a Markdown table. Each (implementation, N)
// pair runs in a child process of its own (this binary, re-executed with -run-one),
// one after the other, so CPU figures are not shared.
//
//	cd bench && go run ./cmd/compare -n 16,64,128
//	cd bench && go run ./cmd/compare -quick
//	cd bench && go run ./cmd/compare -n 16 -impls node/lan+keys,node/lan+keys+mtls -steady 60s -crashes 1
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/omnirelay/mesh/bench/compare"
)

func main() {
	ns := flag.String("n", "16,64,128", "cluster sizes, comma-separated")
	impls := flag.String("impls", strings.Join(compare.Impls, ","), "implementations, comma-separated")
	quick := flag.Bool("quick", false, "N=16 only")
	settle := flag.Duration("settle", 10*time.Second, "quiet time after formation, before the steady window (formation gossip drains)")
	steady := flag.Duration("steady", 8*time.Second, "steady-state window for bytes, packets and CPU")
	crashes := flag.Int("crashes", 3, "nodes crashed one after another per run; the table shows the median")
	timeout := flag.Duration("timeout", 90*time.Second, "bound on each phase")
	runOne := flag.String("run-one", "", "internal: run one implementation with -n nodes and print JSON")
	cpuProfile := flag.String("cpuprofile", "", "with -run-one: write a CPU profile of the whole run to this file")
	flag.Parse()
	opt := compare.Options{Settle: *settle, Steady: *steady, Crashes: *crashes, Timeout: *timeout}

	if *runOne != "" {
		n, err := strconv.Atoi(*ns)
		if err != nil {
			fail("-run-one needs a single -n: %v", err)
		}
		if *cpuProfile != "" {
			f, err := os.Create(*cpuProfile)
			if err != nil {
				fail("%v", err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				fail("%v", err)
			}
			defer f.Close()
		}
		r, err := compare.Run(*runOne, n, opt)
		pprof.StopCPUProfile()
		if err != nil {
			fail("%v", err)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	if *quick {
		*ns = "16"
	}
	self, err := os.Executable()
	if err != nil {
		fail("finding this binary: %v", err)
	}
	begin := time.Now()
	var rs []compare.Result
	for _, nStr := range strings.Split(*ns, ",") {
		for _, impl := range strings.Split(*impls, ",") {
			fmt.Fprintf(os.Stderr, "running %s n=%s ... ", impl, nStr)
			cmd := exec.Command(self, "-run-one", impl, "-n", nStr, "-settle", settle.String(),
				"-steady", steady.String(), "-crashes", strconv.Itoa(*crashes), "-timeout", timeout.String())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, os.Stderr
			if err := cmd.Run(); err != nil {
				fail("%s n=%s: %v", impl, nStr, err)
			}
			var r compare.Result
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				fail("%s n=%s: reading the result: %v", impl, nStr, err)
			}
			fmt.Fprintf(os.Stderr, "%.1f s, gossip queued at steady start %d (-1: not exposed)\n", r.Wall, r.GossipQueued)
			rs = append(rs, r)
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("%s/%s, %d CPUs, %s, host %s, settle %v, steady window %v, %d crashes per run, total %.0f s\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), host, *settle, *steady, *crashes,
		time.Since(begin).Seconds())
	compare.WriteTable(os.Stdout, rs)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "compare: "+format+"\n", args...)
	os.Exit(1)
}

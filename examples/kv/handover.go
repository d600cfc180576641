package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Handover is how long shards went unserved in planned moves: from the old
// owner's loss (the leader's release) to the new owner's gain, from the
// instances' own DEBUG lines (one clock: all run on one host).
type Handover struct {
	Moves int     `json:"moves"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	Max   float64 `json:"max_ms"`
}

// handoverGaps reads the instance logs under dir. A gap of a second or more is
// not a planned move (a killed owner's shards wait for its lease to lapse) and
// is left out.
func handoverGaps(dir string, names []string) Handover {
	type ev struct {
		at     time.Time
		shard  uint32
		gained bool
	}
	var evs []ev
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n, "instance.log"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l struct {
				Msg    string    `json:"msg"`
				Shard  uint32    `json:"shard"`
				Lost   time.Time `json:"lost_at"`
				Gained time.Time `json:"gained_at"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			switch l.Msg {
			case msgLost:
				evs = append(evs, ev{l.Lost, l.Shard, false})
			case msgOpened:
				evs = append(evs, ev{l.Gained, l.Shard, true})
			}
		}
		f.Close()
	}
	slices.SortFunc(evs, func(a, b ev) int { return a.at.Compare(b.at) })
	lost := map[uint32]time.Time{}
	var gaps []time.Duration
	for _, e := range evs {
		if !e.gained {
			lost[e.shard] = e.at
			continue
		}
		if t, ok := lost[e.shard]; ok {
			if g := e.at.Sub(t); g < time.Second {
				gaps = append(gaps, g)
			}
			delete(lost, e.shard)
		}
	}
	slices.Sort(gaps)
	h := Handover{Moves: len(gaps), P50: ms(quantile(gaps, 0.5)), P90: ms(quantile(gaps, 0.9))}
	if len(gaps) > 0 {
		h.Max = ms(gaps[len(gaps)-1])
	}
	return h
}

package vnet

import (
	"cmp"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// Interleaved pushes and pops come out in (time, order pushed) order.
func TestQueuePopsInTimeThenPushOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		type e struct {
			at  int64
			seq int
		}
		var q Queue[int]
		var want []e
		byTime := func(a, b e) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.seq, b.seq)) }
		n := rapid.IntRange(0, 300).Draw(t, "n")
		for i := 0; i < n; i++ {
			at := rapid.Int64Range(0, 20).Draw(t, "at")
			q.Push(at, i)
			want = append(want, e{at, i})
			if rapid.Bool().Draw(t, "pop") {
				slices.SortFunc(want, byTime)
				at, v := q.Pop()
				if at != want[0].at || v != want[0].seq {
					t.Fatalf("popped (%d,%d), want (%d,%d)", at, v, want[0].at, want[0].seq)
				}
				want = want[1:]
			}
		}
		slices.SortFunc(want, byTime)
		for _, w := range want {
			if at, v := q.Pop(); at != w.at || v != w.seq {
				t.Fatalf("popped (%d,%d), want (%d,%d)", at, v, w.at, w.seq)
			}
		}
		if q.Len() != 0 {
			t.Fatalf("Len = %d after draining", q.Len())
		}
	})
}

func TestLinkValidateNamesField(t *testing.T) {
	for _, l := range []Link{{Latency: -1}, {Jitter: -1}, {Loss: 1.5}, {Duplicate: -0.1}, {Spike: 2}, {SpikeMax: -1}} {
		if err := l.Validate(); !errors.Is(err, ErrLink) {
			t.Errorf("%+v: err = %v, want ErrLink", l, err)
		}
	}
	if _, err := NewNet[int](Link{Loss: 2}, rand.New(rand.NewPCG(1, 1))); !errors.Is(err, ErrLink) {
		t.Errorf("NewNet with a bad link: err = %v", err)
	}
}

func TestPartitions(t *testing.T) {
	m, _ := NewModel(DefaultLink(), rand.New(rand.NewPCG(1, 1)))
	for range 4 {
		m.AddEndpoint()
	}
	m.Partition([]int{0, 1})
	if !m.Reachable(0, 1) || m.Reachable(0, 2) || m.Reachable(2, 1) || !m.Reachable(2, 3) {
		t.Fatal("symmetric partition {0,1} | {2,3} wrong")
	}
	m.PartitionOneWay([]int{0}, []int{1})
	if m.Reachable(0, 1) || !m.Reachable(1, 0) || !m.Reachable(0, 2) {
		t.Fatal("one-way partition 0 -> 1 wrong")
	}
	m.Heal()
	m.Isolate(0)
	m.Isolate(1, 2)
	if m.Reachable(0, 1) || m.Reachable(1, 0) || m.Reachable(0, 3) || m.Reachable(3, 2) || !m.Reachable(1, 2) {
		t.Fatal("isolating {0} then {1,2} wrong")
	}
	m.Heal()
	if !m.Reachable(0, 1) || !m.Reachable(3, 2) {
		t.Fatal("Heal left a cut")
	}
}

// A run of the network is a function of its seed: delays, losses, duplicates and
// the order of delivery.
func TestNetIsDeterministic(t *testing.T) {
	run := func(seed uint64) []string {
		l := Link{Latency: time.Millisecond, Jitter: 3 * time.Millisecond, Loss: 0.2, Duplicate: 0.1, Spike: 0.1, SpikeMax: 10 * time.Millisecond}
		n, err := NewNet[int](l, rand.New(rand.NewPCG(seed, 7)))
		if err != nil {
			t.Fatal(err)
		}
		a, b := n.Add("a"), n.Add("b")
		var got []string
		n.Deliver = func(from, to, m int) {
			got = append(got, n.Now().String()+" "+n.Name(from)+">"+n.Name(to)+" "+string(rune('0'+m%10)))
		}
		for i := range 200 {
			n.At(time.Duration(i)*time.Millisecond, func() { n.SendTo(a, b, i) })
		}
		n.Run(time.Second)
		if n.Now() != time.Second {
			t.Fatalf("Now = %v after Run(1s)", n.Now())
		}
		return got
	}
	x, y := run(1), run(1)
	if !slices.Equal(x, y) {
		t.Fatal("same seed, different deliveries")
	}
	if slices.Equal(x, run(2)) {
		t.Fatal("different seeds, same deliveries")
	}
	if len(x) < 100 || len(x) > 250 {
		t.Fatalf("%d deliveries of 200 sends at 20%% loss, 10%% duplication", len(x))
	}
}

func TestNetDropsAtSend(t *testing.T) {
	n, _ := NewNet[int](Link{Latency: time.Millisecond}, rand.New(rand.NewPCG(1, 1)))
	a, b := n.Add("a"), n.Add("b")
	if n.Add("a") != a {
		t.Fatal("Add of a known name gave a new endpoint")
	}
	var got int
	n.Deliver = func(_, _, m int) { got += m }
	if d := n.Send(a, "nobody", 1); d != DropUnknown {
		t.Fatalf("send to an unknown name: %v", d)
	}
	n.Isolate(b)
	if d := n.SendTo(a, b, 1); d != DropPartition {
		t.Fatalf("send across a cut: %v", d)
	}
	n.Heal()
	if d := n.SendTo(a, b, 10); d != Queued {
		t.Fatalf("send on a healthy link: %v", d)
	}
	n.Isolate(b) // the datagram is already on the wire
	n.Run(time.Second)
	if got != 10 {
		t.Fatalf("delivered %d, want the one datagram sent before the cut (10)", got)
	}
}

func TestNetLivelockPanics(t *testing.T) {
	n, _ := NewNet[int](Link{}, rand.New(rand.NewPCG(1, 1)))
	a := n.Add("a")
	n.Deliver = func(from, to, m int) { n.SendTo(a, a, m) }
	n.SendTo(a, a, 1)
	defer func() {
		if recover() == nil {
			t.Fatal("a zero-delay echo loop did not panic")
		}
	}()
	n.Run(time.Second)
}

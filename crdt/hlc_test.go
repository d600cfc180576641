package crdt

import (
	"errors"
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestClockNow(t *testing.T) {
	tests := []struct {
		name string
		last Timestamp
		pt   int64
		want Timestamp
	}{
		{"physical ahead resets logical", Timestamp{100, 7}, 200, Timestamp{200, 0}},
		{"physical equal counts on", Timestamp{100, 7}, 100, Timestamp{100, 8}},
		{"physical behind counts on", Timestamp{100, 7}, 50, Timestamp{100, 8}},
		{"logical saturates into wall", Timestamp{100, math.MaxUint32}, 100, Timestamp{101, 0}},
		{"end of time stands still", Timestamp{math.MaxInt64, math.MaxUint32}, 0, Timestamp{math.MaxInt64, math.MaxUint32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Clock{maxDrift: int64(time.Second), last: tt.last}
			if got := c.Now(tt.pt); got != tt.want {
				t.Fatalf("Now(%d) from %v = %v, want %v", tt.pt, tt.last, got, tt.want)
			}
			if c.Last() != tt.want {
				t.Fatalf("Last = %v, want %v", c.Last(), tt.want)
			}
		})
	}
}

func TestClockUpdate(t *testing.T) {
	const drift = int64(time.Second)
	tests := []struct {
		name    string
		last    Timestamp
		remote  Timestamp
		pt      int64
		want    Timestamp
		wantErr error
	}{
		{"physical newest", Timestamp{100, 3}, Timestamp{90, 9}, 200, Timestamp{200, 0}, nil},
		{"local newest", Timestamp{300, 3}, Timestamp{90, 9}, 200, Timestamp{300, 4}, nil},
		{"remote newest takes its logical", Timestamp{100, 3}, Timestamp{250, 9}, 200, Timestamp{250, 10}, nil},
		{"local and remote tie: max logical", Timestamp{300, 3}, Timestamp{300, 9}, 200, Timestamp{300, 10}, nil},
		{"local and remote tie, local logical larger", Timestamp{300, 12}, Timestamp{300, 9}, 200, Timestamp{300, 13}, nil},
		{"all three tie", Timestamp{200, 1}, Timestamp{200, 5}, 200, Timestamp{200, 6}, nil},
		{"remote exactly max drift ahead is fine", Timestamp{}, Timestamp{200 + drift, 0}, 200, Timestamp{200 + drift, 1}, nil},
		{"remote beyond max drift refused", Timestamp{100, 3}, Timestamp{201 + drift, 0}, 200, Timestamp{100, 3}, ErrClockDrift},
		{"remote logical saturated", Timestamp{100, 3}, Timestamp{250, math.MaxUint32}, 200, Timestamp{251, 0}, nil},
		{"huge physical does not overflow the drift check", Timestamp{}, Timestamp{math.MaxInt64, 0}, math.MaxInt64 - 5, Timestamp{math.MaxInt64, 1}, nil},
		{"huge remote refused", Timestamp{}, Timestamp{math.MaxInt64, 0}, 0, Timestamp{}, ErrClockDrift},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Clock{maxDrift: drift, last: tt.last}
			got, err := c.Update(tt.remote, tt.pt)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want || c.Last() != tt.want {
				t.Fatalf("Update(%v, %d) from %v = %v (last %v), want %v", tt.remote, tt.pt, tt.last, got, c.Last(), tt.want)
			}
		})
	}
}

// The HLC property: a message's receipt is stamped after its send, whatever the
// physical clocks say, as long as they stay within the drift bound.
func TestClockCausality(t *testing.T) {
	a, err := NewClock(DefaultClockConfig())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewClock(DefaultClockConfig())
	skew := int64(400 * time.Millisecond) // b's clock runs behind a's
	var prev Timestamp
	for i := int64(0); i < 100; i++ {
		sent := a.Now(1e9 + i)
		got, err := b.Update(sent, 1e9+i-skew)
		if err != nil {
			t.Fatal(err)
		}
		if got.Compare(sent) <= 0 || got.Compare(prev) <= 0 {
			t.Fatalf("step %d: receive %v not after send %v and previous %v", i, got, sent, prev)
		}
		prev = got
		if reply, err := a.Update(b.Now(1e9+i-skew), 1e9+i); err != nil || reply.Compare(got) <= 0 {
			t.Fatalf("step %d: reply %v not after %v (%v)", i, reply, got, err)
		}
	}
}

func TestClockConfigValidate(t *testing.T) {
	if err := DefaultClockConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClock(ClockConfig{}); err == nil {
		t.Fatal("zero MaxDrift accepted")
	}
}

// Whatever the physical clocks do (steps back, remote skew within or beyond the
// bound), timestamps a clock issues strictly increase, Wall never trails physical
// time, and a receipt within the bound is stamped after the message.
func TestClockMonotonic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const drift = 1000
		c := &Clock{maxDrift: drift}
		pt := int64(0)
		prev := c.Last()
		for range rapid.IntRange(1, 100).Draw(t, "events") {
			pt += rapid.Int64Range(-50, 100).Draw(t, "step")
			var got Timestamp
			if rapid.Bool().Draw(t, "receive") {
				remote := Timestamp{Wall: pt + rapid.Int64Range(-2000, 2000).Draw(t, "skew"), Logical: rapid.Uint32().Draw(t, "logical")}
				var err error
				got, err = c.Update(remote, pt)
				if beyond := remote.Wall > pt+drift; beyond != (err != nil) {
					t.Fatalf("Update(%v) at %d: err %v", remote, pt, err)
				} else if beyond {
					if got != prev {
						t.Fatalf("refused update moved the clock %v -> %v", prev, got)
					}
					continue
				}
				if got.Compare(remote) <= 0 {
					t.Fatalf("receipt %v not after message %v", got, remote)
				}
			} else {
				got = c.Now(pt)
			}
			if got.Compare(prev) <= 0 || got.Wall < pt {
				t.Fatalf("at physical %d: %v after %v", pt, got, prev)
			}
			prev = got
		}
	})
}

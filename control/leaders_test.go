package control

import (
	"errors"
	"testing"
	"time"
)

// leaderFake adds leadership to fakeSource.
type leaderFake struct {
	*fakeSource
	l   Leaders
	err error
}

func (f *leaderFake) Leaders() (Leaders, error) { return f.l, f.err }

func TestLeadersServesTheViewWithETag(t *testing.T) {
	until := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &leaderFake{fakeSource: newFake("a", "b", "c"), l: Leaders{Version: "e1.3",
		Leader: &Lease{Holder: "b", Epoch: 7, ValidUntil: until},
		Voters: []string{"a", "b", "c"}, Local: LocalLeadership{Name: "a", IsVoter: true, EpochSeen: 7}}}
	h := NewHandler(f, Options{})
	rec := get(t, h, "/control/v1/leaders")
	if rec.Code != 200 {
		t.Fatalf("code %d: %s", rec.Code, rec.Body)
	}
	got := decode[Leaders](t, rec)
	if got.Leader == nil || got.Leader.Holder != "b" || got.Leader.Epoch != 7 || !got.Leader.ValidUntil.Equal(until) ||
		got.Local.Name != "a" || !got.Local.IsVoter || len(got.Voters) != 3 {
		t.Fatalf("got %+v (leader %+v)", got, got.Leader)
	}
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if rec := get(t, h, "/control/v1/leaders", "If-None-Match", etag); rec.Code != 304 {
		t.Fatalf("same view with its ETag: code %d, want 304", rec.Code)
	}
	// A renewal moves valid_until only: the ETag must change with it.
	f.l.Leader.ValidUntil = until.Add(time.Second)
	rec = get(t, h, "/control/v1/leaders", "If-None-Match", etag)
	if rec.Code != 200 || rec.Header().Get("ETag") == etag {
		t.Fatalf("after a renewal: code %d, ETag %q (old %q)", rec.Code, rec.Header().Get("ETag"), etag)
	}
}

func TestLeadersNoLeaderIsNull(t *testing.T) {
	f := &leaderFake{fakeSource: newFake("a"), l: Leaders{Version: "e1.0", Local: LocalLeadership{Name: "a"}}}
	rec := get(t, NewHandler(f, Options{}), "/control/v1/leaders")
	if rec.Code != 200 {
		t.Fatalf("code %d", rec.Code)
	}
	raw := decode[map[string]any](t, rec)
	if v, ok := raw["leader"]; !ok || v != nil {
		t.Fatalf("leader = %v (present %v), want null", v, ok)
	}
	if v, ok := raw["voters"].([]any); !ok || len(v) != 0 {
		t.Fatalf("voters = %v, want []", raw["voters"])
	}
}

func TestLeadersOffIs404(t *testing.T) {
	for name, src := range map[string]Source{
		"no LeaderSource": newFake("a"),
		"off":             &leaderFake{fakeSource: newFake("a"), err: ErrLeadershipOff},
	} {
		rec := get(t, NewHandler(src, Options{}), "/control/v1/leaders")
		if rec.Code != 404 || decode[ErrorReply](t, rec).Error.Code != "leadership_off" {
			t.Errorf("%s: code %d body %s", name, rec.Code, rec.Body)
		}
	}
	f := &leaderFake{fakeSource: newFake("a"), err: errors.New("node closed")}
	if rec := get(t, NewHandler(f, Options{}), "/control/v1/leaders"); rec.Code != 503 {
		t.Errorf("other error: code %d, want 503", rec.Code)
	}
}

package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// shardFake adds shard routing to fakeSource: a map of n shards owned round-robin
// by owners, leader-only operations recorded or refused with notLeader.
type shardFake struct {
	*fakeSource
	mu        sync.Mutex
	m         ShardMap
	changed   chan struct{}
	notLeader *NotLeaderError
	members   map[string]bool // DrainNode refuses other names; nil accepts any
	drains    []DrainRequest
	rebalance int
}

func newShardFake(n int, owners ...string) *shardFake {
	f := &shardFake{fakeSource: newFake(owners...), changed: make(chan struct{}),
		m: ShardMap{Epoch: 3, Version: 1, Checksum: "00000000000000aa", Count: n, Leader: owners[0], Node: owners[0]}}
	for i := range n {
		st := "steady"
		if i%5 == 4 {
			st = "draining"
		}
		f.m.Shards = append(f.m.Shards, Shard{ID: uint32(i), Owner: owners[i%len(owners)], State: st, Target: owners[i%len(owners)]})
	}
	return f
}

func (f *shardFake) ShardMap() (ShardMap, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m, nil
}

func (f *shardFake) ShardsChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *shardFake) LookupShard(key string) (ShardLookup, error) {
	id := uint32(len(key)) % uint32(f.m.Count)
	s := f.m.Shards[id]
	return ShardLookup{Key: key, Shard: id, Owner: s.Owner, State: s.State, Leader: f.m.Leader, Epoch: f.m.Epoch, Version: f.m.Version}, nil
}

func (f *shardFake) DrainNode(node string, on bool) error {
	if f.notLeader != nil {
		return f.notLeader
	}
	if f.members != nil && !f.members[node] {
		return fmt.Errorf("%w: %q", ErrUnknownNode, node)
	}
	f.drains = append(f.drains, DrainRequest{Node: node, Drain: on})
	return nil
}

func (f *shardFake) Rebalance() error {
	if f.notLeader != nil {
		return f.notLeader
	}
	f.rebalance++
	return nil
}

// publish installs a new map version and wakes watchers.
func (f *shardFake) publish(owner string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m.Version++
	f.m.Shards = append([]Shard(nil), f.m.Shards...)
	for i := range f.m.Shards {
		f.m.Shards[i].Owner = owner
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func TestShardsFilterPageAndETag(t *testing.T) {
	f := newShardFake(20, "a", "b")
	h := NewHandler(f, Options{})
	rec := get(t, h, "/control/v1/shards?owner=b&state=steady&limit=3")
	if rec.Code != 200 {
		t.Fatalf("code %d: %s", rec.Code, rec.Body)
	}
	var ids []uint32
	page := decode[ShardMap](t, rec)
	for {
		if page.Epoch != 3 || page.Version != 1 || page.Count != 20 || page.Checksum != "00000000000000aa" {
			t.Fatalf("page header %+v", page)
		}
		for _, s := range page.Shards {
			if s.Owner != "b" || s.State != "steady" {
				t.Fatalf("shard %+v passed owner=b&state=steady", s)
			}
			ids = append(ids, s.ID)
		}
		if page.NextPageToken == "" {
			break
		}
		page = decode[ShardMap](t, get(t, h, "/control/v1/shards?owner=b&state=steady&limit=3&page_token="+page.NextPageToken))
	}
	// Owner b holds the odd shards; 9 and 19 are draining (i%5 == 4).
	if want := "[1 3 5 7 11 13 15 17]"; fmt.Sprint(ids) != want {
		t.Fatalf("ids %v, want %s", ids, want)
	}
	etag := rec.Header().Get("ETag")
	if rec := get(t, h, "/control/v1/shards", "If-None-Match", etag); rec.Code != 304 {
		t.Fatalf("same map with its ETag: code %d", rec.Code)
	}
	f.publish("a")
	if rec := get(t, h, "/control/v1/shards", "If-None-Match", etag); rec.Code != 200 || rec.Header().Get("ETag") == etag {
		t.Fatalf("new map: code %d etag %q", rec.Code, rec.Header().Get("ETag"))
	}
	for _, bad := range []string{"state=gone", "limit=0", "page_token=x"} {
		if rec := get(t, h, "/control/v1/shards?"+bad); rec.Code != 400 {
			t.Errorf("%s: code %d, want 400", bad, rec.Code)
		}
	}
}

func TestShardByIDAndLookup(t *testing.T) {
	f := newShardFake(8, "a", "b", "c")
	h := NewHandler(f, Options{})
	r := decode[ShardReply](t, get(t, h, "/control/v1/shards/5"))
	if r.Shard.ID != 5 || r.Shard.Owner != "c" || r.Epoch != 3 || r.Leader != "a" {
		t.Fatalf("shard 5: %+v", r)
	}
	if rec := get(t, h, "/control/v1/shards/8"); rec.Code != 404 {
		t.Fatalf("shard 8 of 8: code %d", rec.Code)
	}
	if rec := get(t, h, "/control/v1/shards/x"); rec.Code != 400 {
		t.Fatalf("shard x: code %d", rec.Code)
	}
	l := decode[ShardLookup](t, get(t, h, "/control/v1/shards/lookup?key=abcd"))
	if l.Key != "abcd" || l.Shard != 4 || l.Owner != "b" || l.Leader != "a" || l.Epoch != 3 {
		t.Fatalf("lookup: %+v", l)
	}
	if rec := get(t, h, "/control/v1/shards/lookup"); rec.Code != 400 {
		t.Fatalf("lookup without key: code %d", rec.Code)
	}
}

func TestShardRoutesOffWithoutShardSource(t *testing.T) {
	h := NewHandler(newFake("a"), Options{})
	for _, p := range []string{"/control/v1/shards", "/control/v1/shards/1", "/control/v1/shards/lookup?key=k"} {
		if rec := get(t, h, p); rec.Code != 404 || !strings.Contains(rec.Body.String(), "shards_off") {
			t.Errorf("%s: code %d %s", p, rec.Code, rec.Body)
		}
	}
}

func TestDrainAndRebalanceThroughClient(t *testing.T) {
	f := newShardFake(4, "a", "b")
	srv := httptest.NewServer(NewHandler(f, Options{}))
	defer srv.Close()
	c := &Client{Base: srv.URL}
	ctx := context.Background()
	if err := c.DrainNode(ctx, "b", true); err != nil {
		t.Fatal(err)
	}
	if err := c.DrainNode(ctx, "b", false); err != nil {
		t.Fatal(err)
	}
	if err := c.Rebalance(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.drains) != "[{b true} {b false}]" || f.rebalance != 1 {
		t.Fatalf("drains %v rebalances %d", f.drains, f.rebalance)
	}
	f.notLeader = &NotLeaderError{Leader: "c", Control: "http://10.0.0.3:7070"}
	err := c.DrainNode(ctx, "b", true)
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.Leader != "c" || nl.Control != "http://10.0.0.3:7070" {
		t.Fatalf("non-leader drain: %v", err)
	}
	if err := c.Rebalance(ctx); !errors.As(err, &nl) {
		t.Fatalf("non-leader rebalance: %v", err)
	}
	resp, err := http.Post(srv.URL+"/control/v1/shards/drain", "application/json", strings.NewReader(`{"nodes":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("bad drain body: code %d", resp.StatusCode)
	}
	m, err := c.ListShards(ctx, ShardListOptions{Owner: "a"})
	if err != nil || len(m.Shards) != 2 || m.Shards[1].ID != 2 {
		t.Fatalf("ListShards: %+v %v", m, err)
	}
}

// A drain of a name the source does not know is refused with 404 unknown_node in
// the error envelope, naming the node, and nothing is recorded.
func TestDrainUnknownNodeIs404(t *testing.T) {
	f := newShardFake(4, "a", "b")
	f.members = map[string]bool{"a": true, "b": true}
	srv := httptest.NewServer(NewHandler(f, Options{}))
	defer srv.Close()
	err := (&Client{Base: srv.URL}).DrainNode(context.Background(), "ghost", true)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Body.Code != "unknown_node" || !strings.Contains(ae.Body.Message, `"ghost"`) {
		t.Fatalf("drain of an unknown node: %v", err)
	}
	if len(f.drains) != 0 {
		t.Fatalf("refused drain recorded: %v", f.drains)
	}
}

func TestShardsWatchSendsEachMap(t *testing.T) {
	f := newShardFake(4, "a", "b")
	srv := httptest.NewServer(NewHandler(f, Options{}))
	t.Cleanup(srv.Close) // after openWatch's cancel: Close waits for open streams
	sc := openWatch(t, srv.URL+"/control/v1/shards?watch=true&owner=b", "")
	ev := readEvents(t, sc, 1)
	if ev[0].event != "map" || ev[0].id != "3.1" || !strings.Contains(ev[0].data, `"owner":"b"`) || strings.Contains(ev[0].data, `"owner":"a"`) {
		t.Fatalf("first event %+v", ev[0])
	}
	f.publish("b")
	ev = readEvents(t, sc, 1)
	if ev[0].id != "3.2" || strings.Count(ev[0].data, `"owner":"b"`) != 4 {
		t.Fatalf("second event %+v", ev[0])
	}
}

// A drain body must name the node and say which way: {"node":"b"} alone used to
// read as drain=false and lift b's drain. Each refusal is 400 bad_request naming
// what is wrong, and nothing reaches the source.
func TestDrainBodyNeedsNodeAndDrain(t *testing.T) {
	f := newShardFake(4, "a", "b")
	srv := httptest.NewServer(NewHandler(f, Options{}))
	defer srv.Close()
	for body, want := range map[string]string{
		`{"node":"b"}`:                 `"drain" is required`,
		`{"drain":true}`:               `"node" is required`,
		`{"node":"","drain":true}`:     `"node" is required`,
		`{"node":"b","drain":true} {}`: "data after the object",
		`{"node":"b","drain":"yes"}`:   "cannot unmarshal",
		`{"node":"` + strings.Repeat("n", 256) + `","drain":true}`: "more than 255",
	} {
		resp, err := http.Post(srv.URL+"/control/v1/shards/drain", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var er ErrorReply
		json.NewDecoder(resp.Body).Decode(&er)
		resp.Body.Close()
		if resp.StatusCode != 400 || er.Error.Code != CodeBadRequest || !strings.Contains(er.Error.Message, want) {
			t.Errorf("%.40s: %d %+v, want 400 bad_request naming %q", body, resp.StatusCode, er.Error, want)
		}
	}
	if len(f.drains) != 0 {
		t.Fatalf("refused drains reached the source: %v", f.drains)
	}
}

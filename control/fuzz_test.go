package control

import (
	"net/http/httptest"
	"testing"
)

// FuzzPeersQuery: any query string gets a well-formed answer (200 JSON, or 400 with
// an error code), never a panic.
func FuzzPeersQuery(f *testing.F) {
	for _, q := range []string{"", "status=alive", "status=a,,b", "limit=5&page_token=bjAz", "meta=k:v&meta=:",
		"role=api", "limit=-1", "page_token=%00", "status=suspect&status=dead&limit=1000"} {
		f.Add(q)
	}
	src := newFake("a", "b", "c")
	h := NewHandler(src, Options{})
	f.Fuzz(func(t *testing.T, q string) {
		req := httptest.NewRequest("GET", "/control/v1/peers", nil)
		req.URL.RawQuery = q
		if req.URL.Query().Get("watch") == "true" {
			return // a stream: covered by the watch tests
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
			decode[PeerList](t, rec)
		case 400:
			if e := decode[ErrorReply](t, rec); e.Error.Code == "" {
				t.Fatalf("400 without an error code: %s", rec.Body)
			}
		default:
			t.Fatalf("query %q: status %d", q, rec.Code)
		}
	})
}

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client reads an agent's control API. The CLI uses only this.
type Client struct {
	// Base is the agent's control URL, e.g. "http://127.0.0.1:7947".
	Base string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// ListOptions filters and pages GET /control/v1/peers (see docs/api.md).
type ListOptions struct {
	Status []string // any of Statuses; empty means all
	Role   string
	Meta   []string // key:value
	Limit  int      // peers per page; 0 means the server default
}

// APIError is a non-2xx answer of the control API.
type APIError struct {
	Status int
	Body   ErrorBody
}

func (e *APIError) Error() string {
	return fmt.Sprintf("control API: %d %s: %s", e.Status, e.Body.Code, e.Body.Message)
}

// ListPeers fetches every page of the peer list and returns the peers and the version
// of the last page.
func (c *Client) ListPeers(ctx context.Context, o ListOptions) ([]Peer, string, error) {
	q := url.Values{}
	if len(o.Status) > 0 {
		q.Set("status", strings.Join(o.Status, ","))
	}
	if o.Role != "" {
		q.Set("role", o.Role)
	}
	for _, m := range o.Meta {
		q.Add("meta", m)
	}
	if o.Limit > 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	peers := []Peer{}
	for {
		var page PeerList
		if err := c.get(ctx, "/control/v1/peers?"+q.Encode(), &page); err != nil {
			return nil, "", err
		}
		peers = append(peers, page.Peers...)
		if page.NextPageToken == "" {
			return peers, page.Version, nil
		}
		q.Set("page_token", page.NextPageToken)
	}
}

// GetPeer fetches one peer by name, with the version of the view it was read from.
func (c *Client) GetPeer(ctx context.Context, name string) (PeerReply, error) {
	var r PeerReply
	err := c.get(ctx, "/control/v1/peers/"+url.PathEscape(name), &r)
	return r, err
}

func (c *Client) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.Base, "/")+path, nil)
	if err != nil {
		return err
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var er ErrorReply
		if json.Unmarshal(body, &er) != nil || er.Error.Code == "" {
			er.Error = ErrorBody{Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(body))}
		}
		return &APIError{Status: resp.StatusCode, Body: er.Error}
	}
	return json.Unmarshal(body, into)
}

// Event is one Server-Sent Event of a watch stream.
type Event struct {
	ID   string
	Kind string // the SSE event name: snapshot, join, ..., map, reset
	Data []byte // JSON
}

// maxEventBytes bounds one event's data line as the client reads it.
const maxEventBytes = 16 << 20

// Watch opens a watch stream (path with watch=true in its query) and calls f for
// each event until ctx ends, the stream ends, or f returns an error.
func (c *Client) Watch(ctx context.Context, path string, f func(Event) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.Base, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	// A watch lasts as long as the caller wants: the client's overall timeout must
	// not cut it (ctx bounds it instead).
	if hc.Timeout != 0 {
		nc := *hc
		nc.Timeout = 0
		hc = &nc
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var er ErrorReply
		if json.Unmarshal(body, &er) != nil || er.Error.Code == "" {
			er.Error = ErrorBody{Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(body))}
		}
		return &APIError{Status: resp.StatusCode, Body: er.Error}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxEventBytes)
	var ev Event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Kind != "" {
				if err := f(ev); err != nil {
					return err
				}
			}
			ev = Event{}
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.Data = []byte(line[6:])
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

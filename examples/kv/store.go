package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The store stands in for the durable, replicated store a real sharded service
// would keep its data in (README.md, "Durability"): a directory every instance
// can reach, one append-only log per shard. The mesh moves ownership, not data;
// whoever owns a shard next rebuilds its state from that shard's log.
//
// Every record carries the writer's fencing token, and an append is refused when
// its token is below the highest one the log holds: a deposed owner that wakes up
// late cannot write after its successor opened the shard. The check and the
// append happen under an exclusive flock of the log, and the record is fsynced
// before the write is acknowledged.

// Token is a shard's fencing token: the granting leader's epoch, then the map
// version of the grant (node.ShardChange), compared in that order.
type Token struct {
	Epoch   uint64 `json:"e"`
	Version uint64 `json:"v"`
}

// Less orders tokens by epoch, then version.
func (t Token) Less(u Token) bool {
	return t.Epoch < u.Epoch || (t.Epoch == u.Epoch && t.Version < u.Version)
}

func (t Token) String() string { return fmt.Sprintf("%d.%d", t.Epoch, t.Version) }

// ErrFenced is returned for an operation whose token is below the highest the
// shard's log holds: another owner took the shard over.
var ErrFenced = errors.New("kv: fenced: a newer owner opened this shard")

// Record kinds.
const (
	recOpen   = "open"   // an owner took the shard over (no data)
	recPut    = "put"    // Key's value list becomes [Value]
	recAppend = "append" // Value is appended to Key's list
)

// record is one line of a shard log (JSON).
type record struct {
	Kind  string `json:"k"`
	Token Token  `json:"t"`
	By    string `json:"by,omitempty"` // the owner instance, for the reader of the log
	ID    string `json:"id,omitempty"` // client request id: applied once per shard
	Key   string `json:"key,omitempty"`
	Value string `json:"val,omitempty"`
}

// maxRecord bounds one log line, so a corrupt log cannot make a reader buffer
// without limit; the HTTP layer bounds keys and values well below it.
const maxRecord = 1 << 20

// shardLog is one owner's handle on a shard's log and the state rebuilt from it.
// Not safe for concurrent use: the instance serializes operations per shard.
type shardLog struct {
	f       *os.File
	off     int64 // bytes of the log applied to the fields below
	highest Token
	data    map[string][]string
	ids     map[string]struct{} // request ids applied

	// Of the last operation, for the timing of requests: the wait for the
	// file lock and the fsync.
	flockWait, synced time.Duration
}

func logPath(dir string, shard uint32) string {
	return filepath.Join(dir, fmt.Sprintf("shard-%05d.log", shard))
}

// openShard opens (creating) a shard's log, rebuilds the state from it, and,
// unless its token is below the log's highest, appends an open record that fences
// every earlier owner from then on. kept, when not nil, is this process's handle
// from an earlier ownership of the shard: it catches up from where it stopped
// instead of rebuilding from the start, which is the same state (the log only
// grows) at the cost of the records since; on failure it is closed.
func openShard(dir string, shard uint32, tok Token, by string, kept *shardLog) (*shardLog, error) {
	l := kept
	if l == nil {
		f, err := os.OpenFile(logPath(dir, shard), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("kv: store: %w", err)
		}
		l = &shardLog{f: f, data: map[string][]string{}, ids: map[string]struct{}{}}
	}
	// Not fsynced: it fences through the shared file at once, and the first
	// write's fsync makes it durable before anything depends on it.
	if err := l.locked(func() error { return l.appendLocked(tok, record{Kind: recOpen, By: by}, false) }); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func (l *shardLog) close() error { return l.f.Close() }

// locked runs fn holding the log's exclusive lock, after catching up with what
// other owners appended since this handle last looked.
func (l *shardLog) locked(fn func() error) error {
	l.flockWait, l.synced = 0, 0
	start := time.Now()
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("kv: store: lock: %w", err)
	}
	defer syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.flockWait = time.Since(start)
	if err := l.catchUp(); err != nil {
		return err
	}
	return fn()
}

// catchUp applies the records appended after l.off. A last line without its
// newline is the torn tail of an append that never returned (the writer died
// before fsync finished): it was never acknowledged, so it is cut off.
func (l *shardLog) catchUp() error {
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("kv: store: %w", err)
	}
	if fi.Size() < l.off {
		return fmt.Errorf("kv: store: %s shrank from %d to %d bytes", l.f.Name(), l.off, fi.Size())
	}
	if fi.Size() == l.off {
		return nil
	}
	sc := bufio.NewScanner(io.NewSectionReader(l.f, l.off, fi.Size()-l.off))
	sc.Buffer(make([]byte, 0, 64<<10), maxRecord)
	sc.Split(func(data []byte, _ bool) (int, []byte, error) {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			return i + 1, data[:i+1], nil
		}
		return 0, nil, nil // whole lines only: a torn tail is left unread
	})
	for sc.Scan() {
		line := sc.Bytes()
		var rec record
		if err := json.Unmarshal(line[:len(line)-1], &rec); err != nil {
			return fmt.Errorf("kv: store: %s: record at offset %d: %w", l.f.Name(), l.off, err)
		}
		l.apply(rec)
		l.off += int64(len(line))
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("kv: store: %s at offset %d: %w", l.f.Name(), l.off, err)
	}
	if l.off < fi.Size() {
		if err := l.f.Truncate(l.off); err != nil {
			return fmt.Errorf("kv: store: cutting a torn record: %w", err)
		}
	}
	return nil
}

func (l *shardLog) apply(rec record) {
	if l.highest.Less(rec.Token) {
		l.highest = rec.Token
	}
	if rec.ID != "" {
		l.ids[rec.ID] = struct{}{}
	}
	switch rec.Kind {
	case recPut:
		l.data[rec.Key] = []string{rec.Value}
	case recAppend:
		l.data[rec.Key] = append(l.data[rec.Key], rec.Value)
	}
}

// fence refuses tok when the log holds a higher one.
func (l *shardLog) fence(tok Token) error {
	if tok.Less(l.highest) {
		return fmt.Errorf("%w: token %s, log holds %s", ErrFenced, tok, l.highest)
	}
	return nil
}

// appendLocked writes rec under tok, fsyncs it (when sync) and applies it; the
// caller holds the lock and has caught up.
func (l *shardLog) appendLocked(tok Token, rec record, sync bool) error {
	if err := l.fence(tok); err != nil {
		return err
	}
	rec.Token = tok
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := l.f.WriteAt(b, l.off); err != nil {
		return fmt.Errorf("kv: store: %w", err)
	}
	if sync {
		start := time.Now()
		err := l.f.Sync()
		l.synced = time.Since(start)
		if err != nil {
			return fmt.Errorf("kv: store: fsync: %w", err)
		}
	}

	l.off += int64(len(b))
	l.apply(rec)
	return nil
}

// write applies a put or append under tok unless request id was applied
// already; dup reports that it was (and nothing was written).
func (l *shardLog) write(tok Token, rec record) (dup bool, err error) {
	err = l.locked(func() error {
		if err := l.fence(tok); err != nil {
			return err
		}
		if _, ok := l.ids[rec.ID]; ok && rec.ID != "" {
			dup = true
			return nil
		}
		return l.appendLocked(tok, rec, true)
	})
	return dup, err
}

// read returns key's value list as the log holds it now; fenced like a write,
// so a deposed owner never answers from a state its successor moved on from.
func (l *shardLog) read(tok Token, key string) ([]string, error) {
	var out []string
	err := l.locked(func() error {
		if err := l.fence(tok); err != nil {
			return err
		}
		out = append(out, l.data[key]...)
		return nil
	})
	return out, err
}

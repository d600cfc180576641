package identity

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// A join token is "<id>.<secret>", as Kubernetes bootstrap tokens: 6 and 16
// characters of [a-z0-9] (about 83 bits of secret). The id names the token in
// lists and audit lines and is not secret; the secret is shown once, when the token
// is made, and only its SHA-256 is stored.
const (
	TokenIDLen     = 6
	TokenSecretLen = 16
	tokenAlphabet  = "abcdefghijklmnopqrstuvwxyz0123456789"
	// MaxTokens bounds a store, so token creation cannot grow it without end.
	MaxTokens = 4096
	// maxTokenFile bounds the token file read: MaxTokens records of a few hundred bytes.
	maxTokenFile = 4 << 20
)

var (
	// ErrMalformedToken means a presented token is not <id>.<secret> of the right
	// lengths and characters.
	ErrMalformedToken = errors.New("identity: malformed join token")
	// ErrTokenUnknown means no token has the presented id.
	ErrTokenUnknown = errors.New("identity: unknown join token")
	// ErrTokenSecret means the presented secret is not the token's.
	ErrTokenSecret = errors.New("identity: wrong join token secret")
	// ErrTokenExpired means the token's expiry has passed.
	ErrTokenExpired = errors.New("identity: join token expired")
	// ErrTokenUsed means the token was already redeemed: tokens are single use.
	ErrTokenUsed = errors.New("identity: join token already used")
	// ErrTokenWrongCluster means the token was made for another cluster.
	ErrTokenWrongCluster = errors.New("identity: join token is for another cluster")
	// ErrTokenExists means a token with that id is already stored.
	ErrTokenExists = errors.New("identity: join token id exists")
	// ErrTokenStoreFull means the store holds MaxTokens tokens.
	ErrTokenStoreFull = errors.New("identity: token store full")
	// ErrInvalidToken means a stored token record is inconsistent (bad id, hash,
	// role, cluster or times), or a token file cannot be decoded strictly.
	ErrInvalidToken = errors.New("identity: invalid token record")
)

// Token is a stored join token: everything but its secret.
type Token struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_sha256"` // hex SHA-256 of the secret
	Cluster    string    `json:"cluster"`
	Role       Role      `json:"role"` // the role of the certificate it buys
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	UsedAt     time.Time `json:"used_at,omitzero"`
	UsedBy     string    `json:"used_by,omitempty"` // who redeemed it, for the audit trail
}

// Validate checks a record's fields.
func (t Token) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: token %q: %s", ErrInvalidToken, t.ID, fmt.Sprintf(format, args...))
	}
	if !tokenChars(t.ID, TokenIDLen) {
		return bad("id must be %d characters of [a-z0-9]", TokenIDLen)
	}
	if h, err := hex.DecodeString(t.SecretHash); err != nil || len(h) != sha256.Size {
		return bad("secret_sha256 must be %d hex digits", 2*sha256.Size)
	}
	if err := ValidateName(t.Cluster); err != nil {
		return bad("cluster: %v", err)
	}
	if _, err := ParseRole(string(t.Role)); err != nil {
		return bad("%v", err)
	}
	if !t.Expires.After(t.Created) {
		return bad("expires %s is not after created %s", t.Expires.Format(time.RFC3339), t.Created.Format(time.RFC3339))
	}
	return nil
}

// NewToken makes a token for cluster and role, valid for ttl from now. It returns
// the token to hand out ("<id>.<secret>", shown only this once) and the record to
// store.
func NewToken(cluster string, role Role, ttl time.Duration, now time.Time) (string, Token, error) {
	if ttl <= 0 {
		return "", Token{}, fmt.Errorf("%w: token TTL %v is not positive", ErrInvalidTTL, ttl)
	}
	id, secret := randomChars(TokenIDLen), randomChars(TokenSecretLen)
	t := Token{ID: id, SecretHash: hashSecret(secret), Cluster: cluster, Role: role, Created: now, Expires: now.Add(ttl)}
	if err := t.Validate(); err != nil {
		return "", Token{}, err
	}
	return id + "." + secret, t, nil
}

// ParseToken splits a presented token into id and secret.
func ParseToken(s string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(s, ".")
	if !ok || !tokenChars(id, TokenIDLen) || !tokenChars(secret, TokenSecretLen) {
		return "", "", fmt.Errorf("%w: want %d and %d characters of [a-z0-9] joined by '.'", ErrMalformedToken, TokenIDLen, TokenSecretLen)
	}
	return id, secret, nil
}

// Redeem spends a presented token for cluster at now, recording usedBy, and returns
// the spent record (its Role is what the bearer may be issued). The check and the
// spending are one store update, so two bearers racing with one token cannot both
// win. The secret is checked first, in constant time, so a caller without it learns
// nothing of the token's state.
func Redeem(store TokenStore, presented, cluster string, now time.Time, usedBy string) (Token, error) {
	id, secret, err := ParseToken(presented)
	if err != nil {
		return Token{}, err
	}
	var spent Token
	err = store.Update(id, func(t *Token) error {
		want, _ := hex.DecodeString(t.SecretHash) // Validate ran on every stored record
		got := sha256.Sum256([]byte(secret))
		switch {
		case subtle.ConstantTimeCompare(got[:], want) != 1:
			return fmt.Errorf("%w: token %q", ErrTokenSecret, id)
		case !t.UsedAt.IsZero():
			return fmt.Errorf("%w: token %q was redeemed at %s by %q", ErrTokenUsed, id, t.UsedAt.UTC().Format(time.RFC3339), t.UsedBy)
		case !now.Before(t.Expires):
			return fmt.Errorf("%w: token %q expired at %s", ErrTokenExpired, id, t.Expires.UTC().Format(time.RFC3339))
		case t.Cluster != cluster:
			return fmt.Errorf("%w: token %q is for cluster %q, this is %q", ErrTokenWrongCluster, id, t.Cluster, cluster)
		}
		t.UsedAt, t.UsedBy = now, usedBy
		spent = *t
		return nil
	})
	return spent, err
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func tokenChars(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(tokenAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

// randomChars draws n characters of tokenAlphabet uniformly from crypto/rand.
func randomChars(n int) string {
	const limit = 256 - 256%len(tokenAlphabet) // bytes at or above it would bias the draw
	out := make([]byte, 0, n)
	var buf [32]byte
	for len(out) < n {
		rand.Read(buf[:]) // never fails (crypto/rand crashes the program instead)
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			}
		}
	}
	return string(out)
}

// TokenStore keeps join-token records. Implementations are safe for concurrent use.
type TokenStore interface {
	// Add stores a new, valid record; ErrTokenExists if its id is taken,
	// ErrTokenStoreFull at MaxTokens unexpired records (expired ones are dropped then).
	Add(Token) error
	// Update calls fn on a copy of the record with that id and stores the result if
	// fn returns nil; fn's error is returned and nothing changes otherwise.
	// ErrTokenUnknown if there is no such record.
	Update(id string, fn func(*Token) error) error
	// Remove deletes a record; ErrTokenUnknown if there is none.
	Remove(id string) error
	// List returns every record, sorted by id.
	List() ([]Token, error)
}

// tokenMap is the logic both stores share. Its changes happen in place and return
// an undo, so the file store can take a change back when it cannot save it.
type tokenMap map[string]Token

func (m tokenMap) add(t Token) (undo func(), err error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if _, ok := m[t.ID]; ok {
		return nil, fmt.Errorf("%w: %q", ErrTokenExists, t.ID)
	}
	// A full store first forgets the records that had expired when t was made:
	// nothing removes them otherwise, and 4,096 tokens made over a cluster's life
	// would stop token creation for good. A token redeemed and not yet expired is
	// kept, so its reuse is still refused as reused.
	var dropped []Token
	if len(m) >= MaxTokens {
		for id, o := range m {
			if !t.Created.Before(o.Expires) {
				dropped = append(dropped, o)
				delete(m, id)
			}
		}
	}
	undoDrop := func() {
		for _, o := range dropped {
			m[o.ID] = o
		}
	}
	if len(m) >= MaxTokens {
		return nil, fmt.Errorf("%w: %d unexpired tokens", ErrTokenStoreFull, len(m))
	}
	m[t.ID] = t
	return func() { delete(m, t.ID); undoDrop() }, nil
}

func (m tokenMap) update(id string, fn func(*Token) error) (undo func(), err error) {
	old, ok := m[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrTokenUnknown, id)
	}
	t := old
	if err := fn(&t); err != nil {
		return nil, err
	}
	if t.ID != id {
		return nil, fmt.Errorf("%w: an update changed id %q to %q", ErrInvalidToken, id, t.ID)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	m[id] = t
	return func() { m[id] = old }, nil
}

func (m tokenMap) remove(id string) (undo func(), err error) {
	old, ok := m[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrTokenUnknown, id)
	}
	delete(m, id)
	return func() { m[id] = old }, nil
}

func (m tokenMap) list() []Token {
	return slices.SortedFunc(maps.Values(m), func(a, b Token) int { return strings.Compare(a.ID, b.ID) })
}

// tokenStore is a tokenMap behind a lock, saved by persist (if set) after every
// change; a change that cannot be saved is undone.
type tokenStore struct {
	mu      sync.Mutex
	m       tokenMap
	persist func(tokenMap) error
}

func (s *tokenStore) commit(undo func(), err error) error {
	if err != nil {
		return err
	}
	if s.persist != nil {
		if err := s.persist(s.m); err != nil {
			undo()
			return err
		}
	}
	return nil
}

// Add implements TokenStore.
func (s *tokenStore) Add(t Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit(s.m.add(t))
}

// Update implements TokenStore.
func (s *tokenStore) Update(id string, fn func(*Token) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit(s.m.update(id, fn))
}

// Remove implements TokenStore.
func (s *tokenStore) Remove(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit(s.m.remove(id))
}

// List implements TokenStore.
func (s *tokenStore) List() ([]Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.list(), nil
}

// MemTokenStore is a TokenStore in memory.
type MemTokenStore struct{ tokenStore }

// NewMemTokenStore returns an empty in-memory store.
func NewMemTokenStore() *MemTokenStore { return &MemTokenStore{tokenStore{m: tokenMap{}}} }

// FileTokenStore is a TokenStore in a JSON file (mode 0600), rewritten atomically
// and synced on every change, so a crash loses no acknowledged change and a token
// redeemed once stays redeemed. One process owns the file.
type FileTokenStore struct {
	tokenStore
	path string
}

// tokenFile is the file's layout. Version changes when the layout does.
type tokenFile struct {
	Version int     `json:"version"`
	Tokens  []Token `json:"tokens"`
}

const tokenFileVersion = 1

// OpenFileTokenStore reads path, strictly (unknown fields, trailing data, invalid
// or duplicate records and more than MaxTokens records are refused), or starts
// empty if it does not exist.
func OpenFileTokenStore(path string) (*FileTokenStore, error) {
	s := &FileTokenStore{tokenStore: tokenStore{m: tokenMap{}}, path: path}
	s.persist = s.save
	b, err := readLimited(path, maxTokenFile)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var tf tokenFile
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidToken, path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: data after the JSON object", ErrInvalidToken, path)
	}
	if tf.Version != tokenFileVersion {
		return nil, fmt.Errorf("%w: %s: version %d, want %d", ErrInvalidToken, path, tf.Version, tokenFileVersion)
	}
	for _, t := range tf.Tokens {
		if _, err := s.m.add(t); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return s, nil
}

// save writes m to the file.
func (s *FileTokenStore) save(m tokenMap) error {
	b, err := json.MarshalIndent(tokenFile{Version: tokenFileVersion, Tokens: m.list()}, "", "  ")
	if err == nil {
		err = writeAtomic(s.path, append(b, '\n'), 0o600, true)
	}
	if err != nil {
		return fmt.Errorf("identity: saving tokens to %s: %w", s.path, err)
	}
	return nil
}

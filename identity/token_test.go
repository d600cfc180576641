package identity

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// eachStore runs f against both stores.
func eachStore(t *testing.T, f func(t *testing.T, s TokenStore)) {
	t.Run("mem", func(t *testing.T) { f(t, NewMemTokenStore()) })
	t.Run("file", func(t *testing.T) {
		s, err := OpenFileTokenStore(filepath.Join(t.TempDir(), "tokens.json"))
		if err != nil {
			t.Fatal(err)
		}
		f(t, s)
	})
}

func addToken(t *testing.T, s TokenStore, cluster string, role Role, ttl time.Duration) (string, Token) {
	t.Helper()
	secret, tok, err := NewToken(cluster, role, ttl, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(tok); err != nil {
		t.Fatal(err)
	}
	return secret, tok
}

func TestTokenIsSingleUseExpiringAndClusterBound(t *testing.T) {
	eachStore(t, func(t *testing.T, s TokenStore) {
		tok, rec := addToken(t, s, "prod", RoleNode, time.Hour)
		if strings.Contains(rec.SecretHash, strings.SplitN(tok, ".", 2)[1]) {
			t.Fatal("the record holds the secret")
		}
		if _, err := Redeem(s, tok, "staging", t0.Add(time.Minute), "n9"); !errors.Is(err, ErrTokenWrongCluster) {
			t.Fatalf("other cluster: %v", err)
		}
		expired, _ := addToken(t, s, "prod", RoleNode, time.Minute)
		if _, err := Redeem(s, expired, "prod", t0.Add(time.Minute), "n8"); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("expired: %v", err)
		}
		wrong := tok[:TokenIDLen+1] + strings.Repeat("a", TokenSecretLen)
		if _, err := Redeem(s, wrong, "prod", t0, "n7"); !errors.Is(err, ErrTokenSecret) {
			t.Fatalf("wrong secret: %v", err)
		}
		spent, err := Redeem(s, tok, "prod", t0.Add(time.Minute), "n4")
		if err != nil || spent.Role != RoleNode || spent.UsedBy != "n4" {
			t.Fatalf("first use: %+v %v", spent, err)
		}
		if _, err := Redeem(s, tok, "prod", t0.Add(2*time.Minute), "n5"); !errors.Is(err, ErrTokenUsed) {
			t.Fatalf("second use: %v", err)
		}
		unknown := "zzzzzz." + strings.Repeat("a", TokenSecretLen)
		if _, err := Redeem(s, unknown, "prod", t0, "n6"); !errors.Is(err, ErrTokenUnknown) {
			t.Fatalf("unknown: %v", err)
		}
		list, _ := s.List()
		if len(list) != 2 || list[0].ID > list[1].ID {
			t.Fatalf("List: %+v", list)
		}
	})
}

func TestMalformedTokensAreRefused(t *testing.T) {
	s := NewMemTokenStore()
	for _, tok := range []string{
		"", ".", "abcdef", "abcdef.", ".0123456789abcdef", "abcde.0123456789abcdef",
		"abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef:0123456789abcdef",
		"abcdef.0123456789abcdef.x", "abcdef.0123456789abcdeé", " abcdef.0123456789abcdef",
		strings.Repeat("a", 10000),
	} {
		if _, err := Redeem(s, tok, "prod", t0, "x"); !errors.Is(err, ErrMalformedToken) {
			t.Errorf("Redeem(%q): %v, want %v", tok, err, ErrMalformedToken)
		}
	}
}

func TestConcurrentRedeemHasOneWinner(t *testing.T) {
	eachStore(t, func(t *testing.T, s TokenStore) {
		tok, _ := addToken(t, s, "prod", RoleNode, time.Hour)
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 8 {
			wg.Go(func() {
				if _, err := Redeem(s, tok, "prod", t0, "racer"); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d redeems won, want 1", wins)
		}
	})
}

func TestTokenStoreRefusesDuplicatesAndBadRecords(t *testing.T) {
	eachStore(t, func(t *testing.T, s TokenStore) {
		_, rec := addToken(t, s, "prod", RoleNode, time.Hour)
		if err := s.Add(rec); !errors.Is(err, ErrTokenExists) {
			t.Fatalf("duplicate Add: %v", err)
		}
		bad := rec
		bad.ID, bad.Role = "qqqqqq", "root"
		if err := s.Add(bad); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Add of a bad record: %v", err)
		}
		if err := s.Update(rec.ID, func(t *Token) error { t.ID = "rrrrrr"; return nil }); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Update changing the id: %v", err)
		}
		if err := s.Remove(rec.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(rec.ID); !errors.Is(err, ErrTokenUnknown) {
			t.Fatalf("second Remove: %v", err)
		}
	})
	if _, _, err := NewToken("prod", RoleNode, 0, t0); !errors.Is(err, ErrInvalidTTL) {
		t.Fatalf("NewToken with no TTL: %v", err)
	}
	if _, _, err := NewToken("prod", "root", time.Hour, t0); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("NewToken with a bad role: %v", err)
	}
}

func TestMemTokenStoreIsBounded(t *testing.T) {
	s := NewMemTokenStore()
	for i := range MaxTokens {
		_, rec, _ := NewToken("prod", RoleNode, time.Hour, t0)
		rec.ID = randomChars(TokenIDLen)
		if err := s.Add(rec); errors.Is(err, ErrTokenExists) {
			continue // a collision of random ids: harmless here
		} else if err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
	}
	for {
		_, rec, _ := NewToken("prod", RoleNode, time.Hour, t0)
		err := s.Add(rec)
		if errors.Is(err, ErrTokenExists) {
			continue
		}
		if !errors.Is(err, ErrTokenStoreFull) {
			t.Fatalf("Add past MaxTokens: %v", err)
		}
		break
	}
	// Once they have expired, a new token takes the place of the expired ones.
	later := t0.Add(2 * time.Hour)
	_, rec, _ := NewToken("prod", RoleNode, time.Hour, later)
	if err := s.Add(rec); err != nil {
		t.Fatalf("Add to a store full of expired tokens: %v", err)
	}
	if all, _ := s.List(); len(all) != 1 || all[0].ID != rec.ID {
		t.Fatalf("%d records after the expired ones were dropped, want only the new one", len(all))
	}
}

func TestFileTokenStorePersistsAndDecodesStrictly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	s, err := OpenFileTokenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := addToken(t, s, "prod", RoleOperator, time.Hour)
	if _, err := Redeem(s, tok, "prod", t0, "alice"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	re, err := OpenFileTokenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Redeem(re, tok, "prod", t0, "mallory"); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("reuse after reopening: %v", err)
	}
	good, _ := os.ReadFile(path)
	for name, content := range map[string]string{
		"unknown field": strings.Replace(string(good), `"version"`, `"extra": 1, "version"`, 1),
		"trailing data": string(good) + "{}",
		"wrong version": strings.Replace(string(good), `"version": 1`, `"version": 2`, 1),
		"bad hash":      strings.Replace(string(good), `"secret_sha256": "`, `"secret_sha256": "zz`, 1),
		"duplicate":     strings.Replace(string(good), `"tokens": [`, `"tokens": [`+tokenJSON(t, re)+",", 1),
		"not JSON":      "tokens",
	} {
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := OpenFileTokenStore(path); !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrTokenExists) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func tokenJSON(t *testing.T, s TokenStore) string {
	list, _ := s.List()
	b, err := json.Marshal(list[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A change the file store cannot save is not made: a redeem that did not reach the
// disk must not be reported, or the token would be usable again after a restart.
func TestFileTokenStoreUndoesUnsavedChange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	os.Mkdir(dir, 0o700)
	s, err := OpenFileTokenStore(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := addToken(t, s, "prod", RoleNode, time.Hour)
	os.RemoveAll(dir)
	if _, err := Redeem(s, tok, "prod", t0, "n1"); err == nil {
		t.Fatal("Redeem succeeded without saving")
	}
	if list, _ := s.List(); !list[0].UsedAt.IsZero() {
		t.Fatal("the unsaved redeem is in memory")
	}
}

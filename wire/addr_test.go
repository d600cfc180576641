package wire

import (
	"errors"
	"testing"
)

func TestCheckAddrAcceptsOnlyIPLiterals(t *testing.T) {
	for addr, ok := range map[string]bool{
		"10.0.0.5:7946":     true,
		"[fd00::5]:7946":    true,
		"127.0.0.1:0":       true,
		"node-1.invalid:79": false,
		"localhost:7946":    false,
		"10.0.0.5":          false,
		"10.0.0.5:port":     false,
		"":                  false,
	} {
		err := CheckAddr(addr)
		if (err == nil) != ok || (err != nil && !errors.Is(err, ErrMalformed)) {
			t.Errorf("CheckAddr(%q) = %v, want ok=%v (or ErrMalformed)", addr, err, ok)
		}
	}
}

package wire

import (
	"errors"
	"io"
	"reflect"
	"strconv"
)

// Small assertion helpers: the module's test dependencies stay at the standard
// library, rapid and msgpack.

func itoa(i int) string { return strconv.Itoa(i) }

func ioErrUnexpectedEOF() error { return io.ErrUnexpectedEOF }

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

func noErr(t tb, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func isErr(t tb, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func equal(t tb, want, got any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("\nwant %#v\ngot  %#v", want, got)
	}
}

func check(t tb, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(format, args...)
	}
}

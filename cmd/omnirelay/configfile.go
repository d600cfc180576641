package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"
)

// decodeConfig decodes the JSON object b into v, refusing unknown keys and anything
// after the object. Its errors name the position (line:column) and the file's key,
// never a Go type or field name.
func decodeConfig(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			off := dec.InputOffset()
			return fmt.Errorf("%s: data after the config object (one JSON object per file)", position(b, off))
		}
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		key, _ := lastKey(b, syn.Offset)
		return fmt.Errorf("%s: %s%s", position(b, syn.Offset), keyPrefix(key), strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		off, _ := findKey(b, func(path string) bool { return path == typ.Field })
		return fmt.Errorf("%s: %q: want %s, got %s", position(b, off), typ.Field, typeWord(typ.Type), typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: the file ends before its JSON object does", position(b, int64(len(b))))
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		off, path := findKey(b, func(path string) bool { return path == name || strings.HasSuffix(path, "."+name) })
		return fmt.Errorf("%s: unknown key %q (keys: docs/configuration.md)", position(b, off), path)
	}
	return err
}

func keyPrefix(key string) string {
	if key == "" {
		return ""
	}
	return fmt.Sprintf("after %q: ", key)
}

// typeWord says in the file's terms what a Go type takes.
func typeWord(t reflect.Type) string {
	if t == reflect.TypeFor[time.Duration]() || t == reflect.TypeFor[duration]() {
		return `a duration string like "250ms"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "an integer"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(typeWord(t.Elem()), "a ") + "s"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.Kind().String()
}

// position is "line L, column C" (both from 1) of byte offset off of b.
func position(b []byte, off int64) string {
	off = min(max(off, 0), int64(len(b)))
	line := bytes.Count(b[:off], []byte("\n")) + 1
	col := off - int64(bytes.LastIndexByte(b[:off], '\n'))
	return fmt.Sprintf("line %d, column %d", line, col)
}

// findKey returns the offset and dotted path of the first object key whose path
// match accepts, or (0, "") if none does before b stops being valid JSON.
func findKey(b []byte, match func(path string) bool) (int64, string) {
	var off int64
	var found string
	walkKeys(b, func(path string, o int64) bool {
		if match(path) {
			off, found = o, path
			return false
		}
		return true
	})
	return off, found
}

// lastKey returns the path and offset of the last key that starts before off.
func lastKey(b []byte, off int64) (string, int64) {
	var key string
	var at int64
	walkKeys(b, func(path string, o int64) bool {
		if o >= off {
			return false
		}
		key, at = path, o
		return true
	})
	return key, at
}

// walkKeys calls fn with the dotted path (array levels left out) and byte offset of
// each object key of b in order, until fn returns false or b stops being valid JSON.
func walkKeys(b []byte, fn func(path string, off int64) bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var keys []string // one per open object or array ("" for an array)
	var inObj []bool
	expectKey := false
	for {
		t, err := dec.Token()
		if err != nil {
			return
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			keys, inObj = append(keys, ""), append(inObj, t == json.Delim('{'))
			expectKey = t == json.Delim('{')
			continue
		case json.Delim('}'), json.Delim(']'):
			keys, inObj = keys[:len(keys)-1], inObj[:len(inObj)-1]
		default:
			if s, ok := t.(string); ok && expectKey {
				keys[len(keys)-1] = s
				var path []string
				for _, k := range keys {
					if k != "" {
						path = append(path, k)
					}
				}
				if !fn(strings.Join(path, "."), dec.InputOffset()-int64(len(s))-2) {
					return
				}
				expectKey = false
				continue
			}
		}
		expectKey = len(inObj) > 0 && inObj[len(inObj)-1] // a value ended
	}
}

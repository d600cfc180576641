package swim

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// TestMemberTableModel runs random adds, removes and lookups against a map, with
// few distinct names so probe runs collide, wrap and get holes punched in them.
func TestMemberTableModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var tab memberTable
		model := map[string]*member{}
		names := rapid.IntRange(1, 200).Draw(t, "names")
		for range rapid.IntRange(0, 400).Draw(t, "ops") {
			name := fmt.Sprintf("n%d", rapid.IntRange(0, names-1).Draw(t, "name"))
			switch rapid.IntRange(0, 2).Draw(t, "op") {
			case 0:
				if model[name] == nil {
					mem := tab.add(name)
					if mem.Name != name || mem.Addr != "" || mem.susp != nil {
						t.Fatalf("add(%q) gave a dirty record %+v", name, *mem)
					}
					mem.Addr = "addr-" + name
					model[name] = mem
				}
			case 1:
				if old := model[name]; old != nil {
					gen := old.gen
					tab.remove(name)
					delete(model, name)
					if old.Name != "" || old.gen != gen+1 {
						t.Fatalf("remove(%q) left name %q gen %d (was %d)", name, old.Name, old.gen, gen)
					}
				}
			}
			if got := tab.get(name); got != model[name] {
				t.Fatalf("get(%q) = %p, model %p", name, got, model[name])
			}
			if tab.Len() != len(model) {
				t.Fatalf("Len %d, model %d", tab.Len(), len(model))
			}
		}
		seen := 0
		tab.each(func(mem *member) {
			seen++
			if model[mem.Name] != mem || mem.Addr != "addr-"+mem.Name {
				t.Fatalf("each gave %q, not the model's record", mem.Name)
			}
		})
		if seen != len(model) {
			t.Fatalf("each saw %d, model %d", seen, len(model))
		}
		for name, mem := range model {
			if tab.get(name) != mem {
				t.Fatalf("get(%q) lost after the run", name)
			}
		}
	})
}

package control

import "testing"

func TestHasRole(t *testing.T) {
	cases := []struct {
		meta map[string]string
		role string
		want bool
	}{
		{map[string]string{"role": "api"}, "api", true},
		{map[string]string{"roles": "api,web"}, "web", true},
		{map[string]string{"roles": " api , web "}, "api", true},
		{map[string]string{"roles": "api,web"}, "ap", false},
		{map[string]string{"roles": "apiweb"}, "api", false},
		{map[string]string{"role": "db", "roles": "api"}, "web", false},
		{map[string]string{}, "api", false},
		{nil, "api", false},
	}
	for _, c := range cases {
		if got := HasRole(c.meta, c.role); got != c.want {
			t.Errorf("HasRole(%v, %q) = %v, want %v", c.meta, c.role, got, c.want)
		}
	}
}

package etcdconn

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// FuzzNamespace: a --namespace is accepted only when its key prefix is
// one name and a "/", and no other accepted namespace's prefix contains
// it or is contained in it: one deployment never lies inside another's
// keys, nor inside the etcd role that confines it.
func FuzzNamespace(f *testing.F) {
	f.Add("baton", "baton-staging")
	f.Add("baton/", "baton/x")
	f.Add("baton//", "/baton")
	f.Add("", "\x1b")
	f.Fuzz(func(t *testing.T, ns, other string) {
		if err := ValidateNamespace(ns); err != nil {
			if !strings.HasPrefix(err.Error(), "namespace: ") {
				t.Fatalf("%q refused with %q, which does not name the flag", ns, err)
			}
			return
		}
		p := Config{Namespace: ns}.Prefix()
		name, ok := strings.CutSuffix(p, "/")
		if !ok || name == "" || strings.ContainsAny(name, "/ ") || len(name) > 64 || name != strings.TrimSuffix(ns, "/") {
			t.Fatalf("namespace %q accepted with prefix %q", ns, p)
		}
		if (Config{Namespace: ns}).Validate() != nil {
			t.Fatalf("namespace %q accepted by ValidateNamespace, refused by Config.Validate", ns)
		}
		if ValidateNamespace(other) != nil {
			return
		}
		if q := (Config{Namespace: other}).Prefix(); q != p && (strings.HasPrefix(q, p) || strings.HasPrefix(p, q)) {
			t.Fatalf("namespaces %q and %q: prefix %q and %q nest", ns, other, p, q)
		}
	})
}

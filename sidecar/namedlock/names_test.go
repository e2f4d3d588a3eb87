package namedlock

import (
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// FuzzLockNames: a lock name is accepted only when its waiters' keys cut
// back to it and to their lease (as ListLocks reads them), and when no
// other accepted name's waiters lie under its prefix (the waiters of "a"
// must not include those of "a/b"); a refusal says why.
func FuzzLockNames(f *testing.F) {
	f.Add("gpu-0", "gpu-0:1", int64(0x694d8c1b2a3f4e5d))
	f.Add("a", "a/b", int64(1))
	f.Add("a:b", "a", int64(-1))
	f.Add("", "\x1b]0;x\a", int64(0))
	f.Fuzz(func(t *testing.T, name, other string, lease int64) {
		if err := ValidateLockName(name); err != nil {
			if err.Error() == "" {
				t.Fatalf("%q refused with an empty error", name)
			}
			return
		}
		if len(name) > MaxLockNameLen || strings.ContainsAny(name, "/ ") {
			t.Fatalf("lock name %q accepted", name)
		}
		k := waiterKey(name, clientv3.LeaseID(lease))
		if !strings.HasPrefix(k, lockPrefix(name)+"/") {
			t.Fatalf("waiter key %q is not under %q", k, lockPrefix(name)+"/")
		}
		gname, glease, ok := parseWaiterKey(k)
		if !ok || gname != name || glease != fmt.Sprintf("%x", lease) {
			t.Fatalf("waiter key %q parses as %q %q %v", k, gname, glease, ok)
		}
		if ValidateLockName(other) == nil && other != name && strings.HasPrefix(waiterKey(other, clientv3.LeaseID(lease)), lockPrefix(name)+"/") {
			t.Fatalf("waiters of lock %q lie under the prefix of lock %q", other, name)
		}
	})
}

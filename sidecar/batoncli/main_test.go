package batoncli_test

import (
	"os"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
)

// endpoint is the etcd shared by the tests of this package; each test
// works in its own namespace.
var endpoint string

func TestMain(m *testing.M) { os.Exit(sidecartest.RunWithEtcd(m, &endpoint)) }

// run runs the baton app against the test etcd in namespace ns and returns
// its stdout, stderr and exit code.
func run(t *testing.T, ns string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runIn(t, ns, nil, args...)
}

package server_test

import (
	"os"
	"testing"

	"github.com/batonhq/baton/sidecar/sidecartest"
)

// endpoint is the etcd shared by the tests of this package; each test
// works in its own namespace.
var endpoint string

func TestMain(m *testing.M) { os.Exit(sidecartest.RunWithEtcd(m, &endpoint)) }

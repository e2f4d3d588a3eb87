package namedlock

import (
	"os"
	"testing"

	"github.com/batonhq/baton/sidecar/internal/etcdtest"
)

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m)) }

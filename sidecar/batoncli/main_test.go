package batoncli_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/urfave/cli/v2"
)

// endpoint is the etcd shared by the tests of this package; each test
// works in its own namespace.
var endpoint string

func TestMain(m *testing.M) { os.Exit(sidecartest.RunWithEtcd(m, &endpoint)) }

// run runs the baton app against the test etcd in namespace ns and returns
// its stdout, stderr and exit code.
func run(t *testing.T, ns string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	app := batoncli.New(&out, &errb)
	full := append([]string{"baton", "--endpoints", endpoint, "--namespace", ns}, args...)
	err := app.RunContext(context.Background(), full)
	var ec cli.ExitCoder
	switch {
	case err == nil:
	case errors.As(err, &ec):
		code = ec.ExitCode()
	default:
		code = 1
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

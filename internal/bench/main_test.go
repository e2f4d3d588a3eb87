package bench_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"go.uber.org/goleak"
)

// roleEnv makes a re-executed test binary act as `baton` with its
// arguments: the bench starts its sidecar processes that way.
const roleEnv = "BATON_BENCH_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "baton" {
		err := batoncli.New(os.Stdout, os.Stderr).RunContext(context.Background(), append([]string{"baton"}, os.Args[1:]...))
		if err != nil {
			fmt.Fprintln(os.Stderr, "baton:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(sidecartest.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Command baton is the Baton sidecar and its command line.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/urfave/cli/v2"
)

func main() {
	if err := batoncli.New(os.Stdout, os.Stderr).RunContext(context.Background(), os.Args); err != nil {
		// The app has printed the error; the exit code is the command's
		// (`baton wait` and bad usage have their own), else 1.
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

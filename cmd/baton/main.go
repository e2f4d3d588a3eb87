// Command baton is the Baton sidecar and its command line.
package main

import (
	"context"
	"os"

	"github.com/batonhq/baton/sidecar/batoncli"
)

func main() {
	if err := batoncli.New(os.Stdout, os.Stderr).RunContext(context.Background(), os.Args); err != nil {
		os.Exit(1)
	}
}

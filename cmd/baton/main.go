// Command baton is the Baton sidecar and its command line.
package main

import (
	"context"
	"os"

	"github.com/batonhq/baton/sidecar/batoncli"
)

func main() {
	os.Exit(batoncli.Main(context.Background(), os.Args, os.Stdin, os.Stdout, os.Stderr))
}

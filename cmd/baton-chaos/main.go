// Command baton-chaos runs Baton under faults and checks the invariants;
// see docs/reliability.md. `make chaos` runs it.
package main

import (
	"os"

	"github.com/batonhq/baton/internal/chaos"
)

func main() {
	chaos.RunRole()
	os.Exit(chaos.Main(os.Args[1:], os.Stdout, os.Stderr))
}

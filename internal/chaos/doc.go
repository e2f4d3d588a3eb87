// Package chaos is the fault-injection harness behind `make chaos`
// (cmd/baton-chaos) and the short scenario inside `make test`: it runs a
// Baton fleet as real processes under faults and checks the invariants
// of the design contract on what it recorded. docs/reliability.md
// describes the fault model, the invariants and what was measured.
//
// One run (Run, scenario.go) starts a three-member etcd cluster
// (cluster.go), sidecars each behind its own fault proxies
// (internal/faultproxy) and workers, all re-executions of the same binary
// in a role (roles.go, started through internal/childproc by process.go);
// it submits the task mix (tasks.go), rewrites a config document
// (configwriter.go) and injects one fault at a time (faults.go; the
// scheduler's, scheduler.go) while it records what the workers report,
// the task states on etcd's watch and the writes of the fenced output
// store (observe.go, history.go, fencedstore.go). After the faults it
// waits for every task to finish, the checker (checker.go) reads the
// history, and the figures are tallied (tally.go) and printed
// (summary.go). main.go is the baton-chaos command line.
package chaos

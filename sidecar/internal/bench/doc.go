// Package bench is the engine of `baton bench`: it measures Baton against
// the alternatives a user would pick, on one etcd, with the same consumers
// and the same number of tasks, in one run.
//
// At each consumer count it measures, each under its own key prefix below
// Config.Etcd.Namespace:
//
//   - ceiling (ceiling.go): raw etcd write transactions, the limit for
//     anything built on this etcd;
//   - recipes (recipes.go): etcd's client/v3/experimental/recipes Queue;
//   - naive (naive.go): read the first pending task, compare-and-swap it;
//   - baton (baton.go): `baton sidecar` processes (sidecars.go) and
//     consumers that attach and loop Next → Complete over their sockets
//     (worker.go), then dispatch latency to idle consumers.
//
// Then the sidecar's overhead against the same operations done directly
// (overhead.go) and the claim cost at several queue depths (depth.go).
// Every measurement checks that each task was delivered exactly once
// (tally.go). Sidecar CPU time and memory come from /proc (procstat.go), so
// they are the sidecars' alone. The Report (report.go) prints as a table,
// as JSON, and as a PNG plot (plot.go).
//
// Nothing here asserts speed; the targets of issue 4 are reported as met
// or missed.
package bench

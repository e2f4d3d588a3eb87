// Package bench is the engine of `baton bench`: it measures Baton as it is
// deployed — one sidecar per worker, fleets of them — and against the
// alternatives a user would pick, on one etcd, in one run.
//
// By default it runs the fleet sweep (fleetrun.go): at each fleet size N,
// N sidecars inside the bench process (fleet.go), each a real sidecar
// with its own etcd client, lease, watch and Unix socket, and one consumer
// per sidecar over its socket. It measures dispatch to N idle workers,
// then the drain of a backlog, and charges each phase's cost to its
// tasks: etcd's write requests (failed compares included), revisions,
// watch events and bytes sent, read from etcd's own /metrics
// (etcdmetrics.go); Baton's lost claims, from the sidecars' counters; the
// CPU time of the bench process (the fleet and its consumers) and of etcd,
// which runs in a process of its own (etcdproc.go). Then the affinity run
// (affinity.go): 16 sidecars, 32 speakers, with and without affinity keys.
// The report (fleetreport.go) evaluates the targets of issue 12 with
// ratios measured in the same run.
//
// On request (Config.Systems) it also compares, at each consumer count and
// each under its own key prefix below Config.Etcd.Namespace:
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
// (tally.go). Sidecar process CPU time and memory come from /proc
// (procstat.go). The Report (report.go) prints as a table, as JSON, and
// as a PNG of gonum/plot panels (plot.go).
//
// Nothing here asserts speed; the targets of issues 4 and 12 are reported
// as met or missed.
package bench

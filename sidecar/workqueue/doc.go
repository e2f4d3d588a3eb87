// Package workqueue is Baton's task queue on etcd: submit, claim, finish,
// retry and recovery of tasks, and the dispatcher that hands tasks to the
// workers behind one sidecar.
//
// # States
//
//	          Submit
//	            │
//	            ▼             Fail (attempts left): backoff / retry_after
//	┌──────▶ PENDING ◀──────────────── FAILED (q/delay/<due>/<id>)
//	│           │ claim txn                  ▲
//	│           ▼                            │
//	│        CLAIMED ────────────────────────┘
//	│        │  │  │
//	│ Release│  │  └── Complete ──▶ DONE
//	│ (no    │  └───── Fail (permanent or last attempt) ──▶ DEAD
//	│ attempt│
//	│ used)  └──── session closed, lease expired, timeout without
//	│              heartbeat: attempt counted, back to PENDING (or DEAD
//	└───────────── when it was the last attempt)
//
// A task's canonical state is state/<id>; the index keys under q/ (see
// keys.go) exist so that the scheduler can follow the queue with a single
// watch. Every state change is one etcd transaction that updates the state
// and the index keys together, so an observer never sees a task in two
// indexes or in none.
//
// A task submitted ready has no state/<id> at first: it is its spec and
// its ready entry, which is what keeps a pending task under 600 bytes of
// etcd's database (D-size6). Its first move (its first claim, or a cancel)
// creates the state in the transaction that deletes the ready entry, so at
// any one revision a task with a spec and no state is PENDING at attempt 0
// in the ready entry its spec names; every reader takes it so
// (statuses.go). A task submitted with a future not_before gets its state
// at submit.
//
// # Claims and fencing
//
// A claim is one transaction: if the ready entry's mod revision is the one
// the claimer saw and no claim key exists, delete the ready entry, create
// q/claim/<id> bound to the holding sidecar's lease, write q/run/<id>, the
// new state (creating state/<id> at a first claim) and the holder's wait
// key. The claim never compares the state: the ready entry stands for it. Of any number of concurrent claims
// exactly one transaction succeeds. The claim key's create revision is the fencing
// token: it is unique per claim and rises with every claim of any task.
//
// Complete, Fail, Release and Heartbeat compare the claim key's create
// revision with the caller's token. A stale answer (the claim expired and
// the task was claimed again, or it was already answered) fails the compare
// and changes nothing; the caller gets ErrClaimLost.
//
// # Getting tasks back
//
// A claim ends without an answer in three ways, and each returns the task
// to PENDING with the attempt counted:
//
//   - the worker's session closes (its Attach stream ended, for example
//     because the process was killed): the sidecar abandons the session's
//     claims at once;
//   - the sidecar's lease expires (crash, pause, partition): etcd deletes
//     the claim key. The q/run/<id> marker has no lease, so the scheduler's
//     watch sees a claim deleted without its run marker in the same
//     revision and requeues the task with a transaction that compares the
//     state's mod revision with the lost token. A sweep when a scheduler is
//     elected and every SweepInterval finds what a watch missed;
//   - the task's timeout passes without a heartbeat: the holding sidecar's
//     timer abandons it, and the scheduler expires it ExpiryGrace later if
//     the holder did not.
//
// Two cases need the holder to try again, every second until the claim is
// returned or lost with the lease (a lease that survives an etcd outage
// would otherwise keep the task until its timeout): returning a claim
// whose worker died while etcd was unreachable, and giving back a claim
// that reached no worker. The latter is an assignment whose Next call had
// left (its wait ended, its caller went away), or a claim transaction of a
// poll whose answer was lost: either shows up on the sidecar's own wait
// keys, and the sidecar releases it with the attempt refunded.
//
// A returned task keeps its place: its ready key carries the original
// priority and submit order, so it goes back to the head of its priority.
//
// # The lease trust window
//
// A sidecar acts on a claim only while its lease session is live; when the
// keepalive reports the lease lost the dispatcher forgets every claim it
// held. Between the moment etcd expires a lease and the moment a paused or
// partitioned sidecar learns it, the sidecar may still believe it holds a
// claim. That is why nothing trusts the belief: every answer is a
// compare-on-token transaction, and side effects outside etcd (output
// files) must carry the fencing token so a stale writer is recognisable.
//
// Nor is a claim handed out on that belief: before Next answers a worker
// with a task, the lease the claim is bound to must be the sidecar's and
// etcd must have confirmed it within its trust window (coord.Trust,
// coord.TrustWindow: two thirds of the TTL) on the lease keeper's clock. A
// claim read later than that (the sidecar was paused or cut off after the
// scheduler assigned it, or after its own claim transaction) may already
// belong to another worker: it is given back without using an attempt, and
// Next answers coord.ErrNoLease (UNAVAILABLE; the worker asks again).
// Heartbeat answers are not held back the same way: they hand out nothing
// new, and the worker's later Complete is fenced anyway.
//
// # Dispatch
//
// Baton runs one sidecar per GPU worker, so the fleet grows in sidecars,
// and what one task costs must not grow with it. Dispatch is therefore
// split in two:
//
//   - A waiting Next call puts a wait key, q/w/<lease>/<seq>, under its
//     sidecar's lease, and each sidecar watches only its own q/w/<lease>/.
//   - One sidecar of the fleet, elected through an etcd election
//     (elect/scheduler), is the scheduler (scheduler.go): it alone watches
//     q/, keeps the head of each queue's ready index in memory (backlog.go),
//     matches waiters with entries (matcher.go: priority, the order of the
//     caller's queues, required labels, affinity) and writes each match as
//     one claim transaction that also compares the wait key and the
//     scheduler's own election key, binds the claim key to the waiter's
//     lease and overwrites the wait key with the task's id. The waiter's
//     sidecar sees that put, reads the claim and the spec, and answers its
//     Next call.
//
// Nobody races for a task (the scheduler is the only claimer of waiting
// workers), a task's events reach the scheduler and the one sidecar it is
// assigned to, and the background duties (sweep, promotion of delayed
// tasks, retention, depth sampling) run once per fleet. When the scheduler
// dies its election key goes with its lease and another sidecar is elected
// within about one TTL; wait keys stay registered meanwhile. A deposed
// scheduler cannot assign: its transactions compare its election key.
//
// Next with wait 0 is a poll and goes around the scheduler: it reads the
// head of its queues and claims the first entry itself (poll.go).
package workqueue

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
// keys.go) exist so that every sidecar can follow the queue with a single
// watch. Every state change is one etcd transaction that updates the state
// and the index keys together, so an observer never sees a task in two
// indexes or in none.
//
// # Claims and fencing
//
// A claim is one transaction: if the ready entry's mod revision is the one
// the claimer saw and no claim key exists, delete the ready entry, create
// q/claim/<id> bound to the sidecar's lease, write q/run/<id> and the new
// state, and read the spec. Of any number of concurrent claimers exactly one
// transaction succeeds. The claim key's create revision is the fencing
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
//     the claim key. The q/run/<id> marker has no lease, so every sidecar's
//     watch sees a claim deleted without its run marker in the same
//     revision, and any of them requeues the task with a transaction that
//     compares the state's mod revision with the lost token (only one
//     recovery wins). A sweep at start and every SweepInterval finds what a
//     watch missed;
//   - the task's timeout passes without a heartbeat: the holding sidecar's
//     timer abandons it, and other sidecars expire it ExpiryGrace later if
//     the holder did not.
//
// Two cases need the holder to try again. When returning a claim fails
// because etcd is unreachable (a worker died during an election), the
// sidecar retries every second until the claim is returned or lost with
// the lease: a lease that survives the outage would otherwise keep the task
// until its timeout. When a claim transaction fails without saying whether
// etcd applied it (its answer was lost), Next notes it and the sweep gives
// the claim back (attempt refunded) if it exists under this sidecar's lease
// and the caller's session and nobody holds it.
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
// # Dispatch
//
// A Dispatcher keeps, per queue, an in-memory window of the head of the
// ready index (Config.Window entries), loaded once and kept current by the
// sidecar's one watch on q/. A claim therefore costs one transaction and no
// read whatever the queue's depth. Claimers choose at random among the
// first `spread` entries of the highest priority present; spread starts at
// 1 (exact FIFO when nobody competes), doubles on each conflict and narrows
// again after calm claims, so many workers rarely race for the same entry
// while priority order holds and FIFO holds roughly within a priority.
// Across sidecars, which do not see each other's claims in flight, each
// prefers its share of the entries: those whose key hashes to its rank
// among the leases seen on recent claims from the queue (see share); it
// takes from the others' shares only when its own has nothing free, and
// then only in its turn, so that an owner with an idle worker gets its
// entry first.
// Idle Next calls wait in FIFO order per queue and are woken by the watch
// when an entry arrives; nothing polls.
package workqueue

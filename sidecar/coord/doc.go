// Package coord holds the liveness primitives every other sidecar package
// builds on: the sidecar's etcd lease and the worker sessions opened over
// the socket.
//
// # The sidecar lease
//
// Each sidecar holds exactly one etcd lease at a time (LeaseKeeper). Every
// claim, lock and registry entry the sidecar writes is bound to it, so when
// the sidecar dies or is cut off from etcd for longer than the TTL, etcd
// deletes them and other sidecars take over. The keeper renews the lease
// with etcd's keepalive stream. When the lease is lost (it expired while the
// sidecar was partitioned or paused) the keeper reports it through Done on
// the old session and grants a new lease, retrying until etcd answers.
// State bound to the old lease is gone: its owners must stop acting on it.
//
// # Worker sessions
//
// A worker session (Session) is the sidecar's view of one worker process:
// it is open while the worker's Attach stream is open. Whatever a worker
// holds under its session (claims, locks) registers a cleanup with OnClose,
// and the cleanups run the moment the stream ends, including when the
// worker was killed with SIGKILL and the kernel closed its socket.
//
// # Locks
//
// Locks are named, fair mutexes held by worker sessions:
//
//	          Lock                      first in line
//	(none) ─────────▶ WAITING ──────────────────────────▶ HELD
//	                     │  key locks/<name>/<lease>          │
//	                     │  watches only the key before it    │ Unlock, session closed
//	                     │                                    │ (lease revoked), lease
//	  session closed,    ▼                                    ▼ expired (sidecar dead)
//	  wait over ──▶ key removed                            key deleted: the next
//	                                                       waiter holds it
//
// Each worker session gets an etcd lease of its own for its locks (a
// concurrency.Session with the sidecar's TTL), so two workers behind one
// sidecar exclude each other. The holder is the key with the lowest create
// revision, and that revision is the fencing token: it rises with every
// holder, so a store that refuses tokens lower than the last it accepted
// refuses a stale holder.
//
// Trust window: a holder whose sidecar is paused or cut off may believe it
// holds the lock for up to the TTL after etcd expired it and gave it to
// the next waiter. The sidecar tells the worker (LockLost on its session,
// and Unlock fails with ErrNotHeld) as soon as it learns; anything the
// lock protects outside etcd must check the fencing token.
package coord

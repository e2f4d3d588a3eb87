// Package namedlock hands out named, fair, fenced locks to sessions
// (the socket's LockService), on etcd.
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
// Each session (coord.Session) gets an etcd lease of its own for
// its locks (a concurrency.Session with the sidecar's TTL), so two processes
// behind one sidecar exclude each other. The holder is the key with the
// lowest create revision, and that revision is the fencing token: it rises
// with every holder, so a store that refuses tokens lower than the last it
// accepted refuses a stale holder.
//
// # The rules of a request
//
// Locks.Lock decides what the socket's Lock means, so that the handler only
// maps errors to codes: a wait is measured on the injected clock and cut to
// MaxWait; wait 0 does not wait (a held lock is a TimeoutError at once,
// and no key is left in the line); a lock taken just as the caller went
// away is given back, because nobody would know it holds it. Every Lock and
// TryLock is one baton.lock.wait span and one Observer.LockWaited call,
// with its Outcome.
//
// # Trust window
//
// A holder whose sidecar is paused or cut off may believe it holds the lock
// for up to the TTL after etcd expired it and gave it to the next waiter.
// The sidecar tells the process (LockLost on its session, and Unlock fails
// with ErrNotHeld) as soon as it learns; anything the lock protects outside
// etcd must check the fencing token.
//
// A grant is answered only inside the lock lease's trust window
// (coord.Trust): etcd must have confirmed the lease, by its grant or a
// keepalive answer, at most coord.TrustWindow earlier (two thirds of the
// TTL; a little more below 3s) on the injected clock. A sidecar paused or cut off after etcd granted it the lock, for
// longer than that, may have lost the lease and the lock with it, the next
// waiter may hold it already: the grant is given back (its key deleted)
// and Lock returns ErrLockLeaseLost, as when the lease is known to be gone,
// never the token. What the window cannot see: a pause after the check
// and before the answer is written to the socket, and a pause between etcd
// sending a keepalive answer and the sidecar reading it (the answer then
// confirms the lease at the time it is read).
package namedlock

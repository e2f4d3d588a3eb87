// Package coord holds the liveness primitives every other sidecar package
// builds on: the sidecar's etcd lease and the sessions that the worker's
// processes open over the socket. Named locks, which hang on both, are package
// sidecar/namedlock.
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
// # Trust window
//
// etcd's client learns that a lease expired only when etcd says so or when
// no keepalive answer came for a whole TTL, and a sidecar paused (SIGSTOP,
// a stalled VM) learns nothing while it is paused. So before a sidecar
// answers its worker that it holds something bound to a lease, it checks
// the lease's Trust: etcd must have confirmed the lease (its grant, a
// keepalive answer) at most TrustWindow (two thirds of the TTL; a little
// more below 3s, so that a live lease's answers are always in time) earlier
// on the injected clock. Past that the lease may be gone and what was bound to
// it given to someone else; the holding is given back, not answered.
//
// # Sessions
//
// Words: the worker is the inference worker a sidecar serves (one GPU
// container, named by --worker-id); a process is one OS process of that
// worker that talks to the socket; a session is one process's Attach
// stream.
//
// A session (Session) is the sidecar's view of one attached process: it is
// open while the process's Attach stream is open, and carries the name the
// process gave (Session.Process) and its pid. Whatever a process holds under
// its session (claims, locks) registers a cleanup with OnClose, and the
// cleanups run the moment the stream ends, including when the process was
// killed with SIGKILL and the kernel closed its socket. Sessions.List with
// its change channel lets the registry show the open sessions.
package coord

package namedlock

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/internal/names"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Errors of Locks.
var (
	// ErrLocked is returned by TryLock when another session holds the lock.
	ErrLocked = errors.New("namedlock: lock is held by another session")
	// ErrNotHeld is returned by Unlock for a lock the session does not hold
	// (never taken, already released, or lost with its lease).
	ErrNotHeld = errors.New("namedlock: lock is not held by this session")
	// ErrAlreadyHeld is returned when a session asks again for a lock it
	// holds or is already waiting for. Locks are not reentrant.
	ErrAlreadyHeld = errors.New("namedlock: lock is already held or awaited by this session")
	// ErrSessionClosed is returned to a waiter whose session closed
	// while it waited.
	ErrSessionClosed = errors.New("namedlock: the session closed while waiting for the lock")
	// ErrLockLeaseLost is returned to a waiter whose lock lease expired while
	// it waited (the sidecar was cut off from etcd for longer than the TTL),
	// or may have: etcd granted the lock, but the lease's last confirmation
	// was older than its trust window (coord.TrustWindow) when the grant
	// was to be answered, so the lock was given back instead.
	ErrLockLeaseLost = errors.New("namedlock: the lock lease expired while waiting for the lock")
)

// TimeoutError is returned by Lock when its wait ended before the lock was
// free; with Wait 0 the lock was held when asked.
type TimeoutError struct {
	Name string
	Wait time.Duration
}

func (e *TimeoutError) Error() string {
	if e.Wait == 0 {
		return fmt.Sprintf("lock %q is held by another session (wait 0s)", e.Name)
	}
	return fmt.Sprintf("lock %q not obtained within %v", e.Name, e.Wait)
}

// Key prefixes of the locks, relative to the deployment's namespace.
//
//	locks/<name>/<lease hex>    one waiter of lock <name>, bound to its lease;
//	                            the oldest (lowest create revision) holds it
//	lockowners/<lease hex>      who owns that lease: worker id, session, process, host
const (
	PrefixLocks      = "locks/"
	PrefixLockOwners = "lockowners/"
)

// MaxLockNameLen is the longest lock name.
const MaxLockNameLen = 128

// ValidateLockName checks a lock name: 1 to 128 of [A-Za-z0-9_.:-]. A slash
// is refused because lock names are key prefixes: "a" must not contain the
// waiters of "a/b".
func ValidateLockName(name string) error { return names.Check(name, MaxLockNameLen, "_.:-") }

// LockOwner is the value of lockowners/<lease hex>: who waits for or holds
// locks under that lease.
type LockOwner struct {
	WorkerID string `json:"worker_id"`         // the sidecar's --worker-id
	Session  string `json:"session"`           // the session that locks
	Process  string `json:"process,omitempty"` // the name its process attached with
	Host     string `json:"host,omitempty"`    // the sidecar's host
	SinceMS  int64  `json:"since_ms"`          // when the lease was granted, Unix ms
	Lease    int64  `json:"lease"`             // the lease id
}

// LockLost tells a session that a lock it held is gone because its
// lease expired. It is pushed on the session (see Session.Pushes).
type LockLost struct {
	Name  string
	Token int64
}

func ownerKey(id clientv3.LeaseID) string { return fmt.Sprintf("%s%x", PrefixLockOwners, int64(id)) }

func lockPrefix(name string) string { return PrefixLocks + name }

// waiterKey is the key of lock name's waiter under lease.
func waiterKey(name string, lease clientv3.LeaseID) string {
	return fmt.Sprintf("%s/%x", lockPrefix(name), int64(lease))
}

// parseWaiterKey splits a waiter key into the lock's name and the lease in
// hex (as in lockowners/).
func parseWaiterKey(k string) (name, lease string, ok bool) {
	rest, ok := strings.CutPrefix(k, PrefixLocks)
	i := strings.LastIndexByte(rest, '/')
	if !ok || i < 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

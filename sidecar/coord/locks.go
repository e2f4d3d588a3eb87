package coord

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/internal/names"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Errors of Locks.
var (
	// ErrLocked is returned by TryLock when another session holds the lock.
	ErrLocked = errors.New("coord: lock is held by another session")
	// ErrNotHeld is returned by Unlock for a lock the session does not hold
	// (never taken, already released, or lost with its lease).
	ErrNotHeld = errors.New("coord: lock is not held by this session")
	// ErrAlreadyHeld is returned when a session asks again for a lock it
	// holds or is already waiting for. Locks are not reentrant.
	ErrAlreadyHeld = errors.New("coord: lock is already held or awaited by this session")
	// ErrSessionClosed is returned to a waiter whose worker session closed
	// while it waited.
	ErrSessionClosed = errors.New("coord: the worker session closed while waiting for the lock")
	// ErrLockLeaseLost is returned to a waiter whose lock lease expired while
	// it waited (the sidecar was cut off from etcd for longer than the TTL).
	ErrLockLeaseLost = errors.New("coord: the lock lease expired while waiting for the lock")
)

// Key prefixes of the locks, relative to the deployment's namespace.
//
//	locks/<name>/<lease hex>    one waiter of lock <name>, bound to its lease;
//	                            the oldest (lowest create revision) holds it
//	lockowners/<lease hex>      who owns that lease: worker id, session, host
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
	WorkerID string `json:"worker_id"`        // the sidecar's worker id
	Session  string `json:"session"`          // the worker session
	Worker   string `json:"worker,omitempty"` // the worker process's name, from Attach
	Host     string `json:"host,omitempty"`   // the sidecar's host
	SinceMS  int64  `json:"since_ms"`         // when the lease was granted, Unix ms
	Lease    int64  `json:"lease"`            // the lease id
}

// LockLost tells a worker session that a lock it held is gone because its
// lease expired. It is pushed on the session (see Session.Pushes).
type LockLost struct {
	Name  string
	Token int64
}

// Locks hands out named, fair mutexes to worker sessions. It follows etcd's
// concurrency.Mutex (see mutex.go for the one difference): a waiter puts a
// key under locks/<name>/ bound to a lease, the waiter with the lowest
// create revision holds the lock, and each waiter watches only the deletion
// of the waiter just before it, so a release wakes exactly one process (no
// herd) and the lock passes in arrival order. The holder's key's create
// revision is its fencing token; it rises with every holder.
//
// Each worker session gets its own etcd lease for its locks: a
// concurrency.Session granted at its first Lock, with the sidecar's TTL,
// kept alive by the sidecar. etcd's Mutex keys waiters by lease, so two
// workers sharing the sidecar's one lease could not exclude each other; one
// lease per worker session makes them ordinary competing waiters. When the
// worker session closes (the process exited, even by SIGKILL) the lease is
// revoked and every lock and wait of that worker ends at once; when the
// sidecar dies or is cut off, etcd expires the lease after the TTL.
//
// Its methods are safe for concurrent use.
type Locks struct {
	cli      *clientv3.Client
	ttl      int
	workerID string
	host     string
	logger   *slog.Logger

	mu       sync.Mutex
	sessions map[*Session]*sessionLocks
	closed   bool
	wg       sync.WaitGroup // watchers of lock leases and retried waiter removals
	ending   sync.WaitGroup // endSession calls revoking a lease
	stop     chan struct{}  // closed by Close: background retries give up
}

// NewLocks returns a lock manager whose leases live ttl (rounded up to
// whole seconds) without keepalive. workerID names the sidecar in
// lockowners/.
func NewLocks(cli *clientv3.Client, ttl time.Duration, workerID string, logger *slog.Logger) *Locks {
	secs := max(int((ttl+time.Second-1)/time.Second), 1)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	return &Locks{cli: cli, ttl: secs, workerID: workerID, host: host, logger: logger, sessions: make(map[*Session]*sessionLocks), stop: make(chan struct{})}
}

// sessionLocks is the lock state of one worker session.
type sessionLocks struct {
	sess *Session
	// grant serialises granting the lock lease, so that concurrent first
	// Locks of one session share one lease.
	grant sync.Mutex

	// Guarded by Locks.mu.
	es       *concurrency.Session // nil until the first Lock, or after its lease was lost
	esCancel context.CancelFunc
	held     map[string]*mutex
	busy     map[string]bool // names with a Lock or TryLock in flight
	closed   bool
	unhook   func()
}

// Held is a lock held by a worker session.
type Held struct {
	Name    string
	Token   int64
	Session string
}

func (l *Locks) state(sess *Session) (*sessionLocks, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrSessionClosed
	}
	sl := l.sessions[sess]
	if sl != nil {
		return sl, nil
	}
	sl = &sessionLocks{sess: sess, held: make(map[string]*mutex), busy: make(map[string]bool)}
	unhook, ok := sess.OnClose(func() { l.endSession(sl) })
	if !ok {
		return nil, ErrSessionClosed
	}
	sl.unhook = unhook
	l.sessions[sess] = sl
	return sl, nil
}

// etcdSession returns the session's lock lease, granting one when there is
// none or the last one was lost.
func (l *Locks) etcdSession(ctx context.Context, sl *sessionLocks) (*concurrency.Session, error) {
	sl.grant.Lock()
	defer sl.grant.Unlock()
	l.mu.Lock()
	es := sl.es
	closed := sl.closed
	l.mu.Unlock()
	if closed {
		return nil, ErrSessionClosed
	}
	if es != nil {
		select {
		case <-es.Done():
		default:
			return es, nil
		}
	}
	// The keepalive runs until the worker session ends (esCancel), not just
	// for this call.
	kaCtx, cancel := context.WithCancel(context.Background())
	// Bounded: other Locks of the session wait for this grant.
	gctx, gcancel := context.WithTimeout(ctx, grantTimeout)
	grant, err := l.cli.Grant(gctx, int64(l.ttl))
	gcancel()
	if err != nil {
		cancel()
		return nil, err
	}
	es, err = concurrency.NewSession(l.cli, concurrency.WithLease(grant.ID), concurrency.WithContext(kaCtx))
	if err != nil {
		cancel()
		l.revoke(grant.ID)
		return nil, err
	}
	owner := LockOwner{
		WorkerID: l.workerID, Session: sl.sess.ID, Worker: sl.sess.Worker, Host: l.host,
		SinceMS: time.Now().UnixMilli(), Lease: int64(grant.ID),
	}
	b, _ := json.Marshal(owner)
	if _, err := l.cli.Put(ctx, ownerKey(grant.ID), string(b), clientv3.WithLease(grant.ID)); err != nil {
		cancel()
		l.revoke(grant.ID)
		return nil, err
	}
	l.mu.Lock()
	if sl.closed {
		l.mu.Unlock()
		cancel()
		l.revoke(grant.ID)
		return nil, ErrSessionClosed
	}
	if sl.esCancel != nil {
		sl.esCancel()
	}
	sl.es, sl.esCancel = es, cancel
	l.wg.Add(1)
	l.mu.Unlock()
	go l.watchLease(sl, es)
	return es, nil
}

// watchLease waits for the lock lease of a session to end. When it ends
// while the session is still open, the lease was lost: the session's locks
// are gone, and the worker is told through its session.
func (l *Locks) watchLease(sl *sessionLocks, es *concurrency.Session) {
	defer l.wg.Done()
	<-es.Done()
	l.mu.Lock()
	if sl.closed {
		l.mu.Unlock()
		return
	}
	var lost []LockLost
	for name, m := range sl.held {
		if m.lease == es.Lease() {
			lost = append(lost, LockLost{Name: name, Token: m.rev})
			delete(sl.held, name)
		}
	}
	if sl.es == es {
		sl.es = nil
	}
	l.mu.Unlock()
	for _, ll := range lost {
		l.logger.Warn("lock lost with its lease", "lock", ll.Name, "token", ll.Token, "session", sl.sess.ID)
		sl.sess.Push(ll)
	}
}

// grantTimeout bounds granting a lock lease; dropRetry is the pause between
// tries to remove an abandoned waiter key.
const (
	grantTimeout = 10 * time.Second
	dropRetry    = time.Second
)

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

// begin marks name busy for the session.
func (l *Locks) begin(sl *sessionLocks, name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sl.closed {
		return ErrSessionClosed
	}
	if sl.busy[name] || sl.held[name] != nil {
		return ErrAlreadyHeld
	}
	sl.busy[name] = true
	return nil
}

// end clears the name's busy mark, unless the removal of an abandoned
// waiter key is still being retried (retryDrop clears it then).
func (l *Locks) end(sl *sessionLocks, name string, dropping bool) {
	if dropping {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(sl.busy, name)
}

// Lock takes the named lock for the worker session, waiting until it is
// free or ctx ends. It returns the fencing token. Waiting ends early with
// ErrSessionClosed when the worker session closes and with ErrLockLeaseLost
// when the lock lease expires; ctx's error when ctx ends. On every error the
// waiter's key is removed, so an abandoned wait never blocks the waiters
// behind it.
func (l *Locks) Lock(ctx context.Context, sess *Session, name string) (int64, error) {
	return l.acquire(ctx, sess, name, false)
}

// TryLock takes the named lock only if nobody holds or waits for it;
// otherwise it returns ErrLocked at once.
func (l *Locks) TryLock(ctx context.Context, sess *Session, name string) (int64, error) {
	return l.acquire(ctx, sess, name, true)
}

func (l *Locks) acquire(ctx context.Context, sess *Session, name string, try bool) (int64, error) {
	if err := ValidateLockName(name); err != nil {
		return 0, fmt.Errorf("name: %w", err)
	}
	sl, err := l.state(sess)
	if err != nil {
		return 0, err
	}
	if err := l.begin(sl, name); err != nil {
		return 0, err
	}
	dropping := false
	defer func() { l.end(sl, name, dropping) }()

	es, err := l.etcdSession(ctx, sl)
	if err != nil {
		return 0, err
	}
	// Stop waiting when the worker session closes or the lease is lost.
	waitCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-sess.Done():
			cancel(ErrSessionClosed)
		case <-es.Done():
			cancel(ErrLockLeaseLost)
		case <-stop:
		}
	}()

	m := newMutex(l.cli, es.Lease(), name)
	if try {
		err = m.tryLock(waitCtx)
	} else {
		err = m.lock(waitCtx)
	}
	if err == nil {
		// Held, unless the lease was lost meanwhile: then watchLease has
		// already told the worker about the locks it knew of, and this
		// one must not be handed out.
		l.mu.Lock()
		ok := !sl.closed && !isDone(es)
		if ok {
			sl.held[name] = m
		}
		l.mu.Unlock()
		if ok {
			return m.rev, nil
		}
		err = ErrLockLeaseLost
	}
	if !errors.Is(err, ErrLocked) && !l.dropWaiter(m) {
		l.mu.Lock()
		if !l.closed { // after Close the session's lease is revoked anyway
			dropping = true
			l.wg.Add(1)
			go l.retryDrop(sl, name, m, es)
		}
		l.mu.Unlock()
	}
	cause := context.Cause(waitCtx)
	if cause != nil && (errors.Is(cause, ErrSessionClosed) || errors.Is(cause, ErrLockLeaseLost)) {
		return 0, cause
	}
	return 0, err
}

func isDone(es *concurrency.Session) bool {
	select {
	case <-es.Done():
		return true
	default:
		return false
	}
}

// dropWaiter deletes the waiter key of a failed Lock, including a put
// whose answer was lost, which would otherwise block every later waiter
// until the session ends. It reports whether the key is gone.
func (l *Locks) dropWaiter(m *mutex) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.remove(ctx); err != nil {
		l.logger.Warn("removing an abandoned lock waiter failed; retrying", "key", m.key, "err", err)
		return false
	}
	return true
}

// retryDrop keeps trying to remove an abandoned waiter key until it is
// gone, its lease ends (etcd removes it then) or Locks closes. Meanwhile
// the session's Lock calls for that name are refused (the name stays
// busy), so that none reuses the key about to be deleted.
func (l *Locks) retryDrop(sl *sessionLocks, name string, m *mutex, es *concurrency.Session) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(sl.busy, name)
		l.mu.Unlock()
	}()
	t := time.NewTicker(dropRetry)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-es.Done():
			return
		case <-l.stop:
			return
		}
		if l.dropWaiter(m) {
			return
		}
	}
}

// Unlock releases the named lock held by the worker session. It returns
// ErrNotHeld when the session does not hold it, including when the lock
// was lost with its lease and someone else may hold it now.
func (l *Locks) Unlock(ctx context.Context, sess *Session, name string) error {
	if err := ValidateLockName(name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	l.mu.Lock()
	sl := l.sessions[sess]
	var m *mutex
	if sl != nil {
		m = sl.held[name]
		if m != nil && sl.busy[name] {
			m = nil
		}
		if m != nil {
			sl.busy[name] = true
		}
	}
	l.mu.Unlock()
	if m == nil {
		return ErrNotHeld
	}
	ok, err := m.unlock(ctx)
	l.mu.Lock()
	delete(sl.busy, name)
	if err == nil {
		delete(sl.held, name)
	}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotHeld
	}
	return nil
}

// HeldBy lists the locks the worker session holds.
func (l *Locks) HeldBy(sess *Session) []Held {
	l.mu.Lock()
	defer l.mu.Unlock()
	sl := l.sessions[sess]
	if sl == nil {
		return nil
	}
	out := make([]Held, 0, len(sl.held))
	for name, m := range sl.held {
		out = append(out, Held{Name: name, Token: m.rev, Session: sess.ID})
	}
	return out
}

// endSession runs when the worker session closes: revoking its lease
// releases its locks and removes its waits in one step.
func (l *Locks) endSession(sl *sessionLocks) {
	l.mu.Lock()
	if sl.closed {
		l.mu.Unlock()
		return
	}
	sl.closed = true
	delete(l.sessions, sl.sess)
	es, cancel := sl.es, sl.esCancel
	sl.es, sl.esCancel = nil, nil
	sl.held = map[string]*mutex{}
	l.ending.Add(1) // Close waits for the revoke, which needs the etcd client
	l.mu.Unlock()
	defer l.ending.Done()
	if es == nil {
		return
	}
	cancel()
	l.revoke(es.Lease())
}

// revoke revokes a lock lease, or leaves it to expire when etcd does not
// answer.
func (l *Locks) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := l.cli.Revoke(ctx, id); err != nil {
		l.logger.Warn("revoking a lock lease failed; its locks go when it expires", "lease", int64(id), "err", err)
	}
}

// Close releases every lock of every session and waits until every lease
// is revoked (or given up on) and the lease watchers stopped; call it
// before closing the etcd client. Lock calls after Close fail with
// ErrSessionClosed.
func (l *Locks) Close() {
	l.mu.Lock()
	if !l.closed {
		close(l.stop)
	}
	l.closed = true
	all := make([]*sessionLocks, 0, len(l.sessions))
	for _, sl := range l.sessions {
		all = append(all, sl)
	}
	l.mu.Unlock()
	for _, sl := range all {
		sl.unhook()
		l.endSession(sl)
	}
	l.ending.Wait() // including ends that sessions closing meanwhile began
	l.wg.Wait()
}

// LockWaiter is one key under locks/<name>/: the holder or a waiter.
type LockWaiter struct {
	// Token is the key's create revision: the fencing token of the holder,
	// the place in line of a waiter.
	Token int64 `json:"token"`
	// Owner says who waits; empty when its lockowners/ entry is gone.
	Owner LockOwner `json:"owner"`
}

// LockInfo describes one lock: its holder and its waiters in order.
type LockInfo struct {
	Name    string       `json:"name"`
	Holder  LockWaiter   `json:"holder"`
	Waiters []LockWaiter `json:"waiters"`
}

// ListLocks reads every lock that is held, sorted by name. kv must be
// namespaced.
func ListLocks(ctx context.Context, kv clientv3.KV) ([]LockInfo, error) {
	resp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(PrefixLocks, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)),
		clientv3.OpGet(PrefixLockOwners, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	owners := map[string]LockOwner{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var o LockOwner
		if json.Unmarshal(kv.Value, &o) == nil {
			owners[strings.TrimPrefix(string(kv.Key), PrefixLockOwners)] = o
		}
	}
	byName := map[string][]LockWaiter{}
	var names []string
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		name, lease, ok := parseWaiterKey(string(kv.Key))
		if !ok {
			continue
		}
		if _, ok := byName[name]; !ok {
			names = append(names, name)
		}
		byName[name] = append(byName[name], LockWaiter{Token: kv.CreateRevision, Owner: owners[lease]})
	}
	out := make([]LockInfo, 0, len(names))
	for _, name := range names { // keys sorted by name already
		ws := byName[name]
		slices.SortFunc(ws, func(a, b LockWaiter) int { return cmp.Compare(a.Token, b.Token) })
		out = append(out, LockInfo{Name: name, Holder: ws[0], Waiters: ws[1:]})
	}
	return out, nil
}

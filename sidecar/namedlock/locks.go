package namedlock

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Locks hands out named, fair mutexes to sessions. It follows etcd's
// concurrency.Mutex (see mutex.go for the one difference): a waiter puts a
// key under locks/<name>/ bound to a lease, the waiter with the lowest
// create revision holds the lock, and each waiter watches only the deletion
// of the waiter just before it, so a release wakes exactly one process (no
// herd) and the lock passes in arrival order. The holder's key's create
// revision is its fencing token; it rises with every holder.
//
// Each session gets its own etcd lease for its locks: a
// concurrency.Session granted at its first Lock, with the sidecar's TTL,
// kept alive by the sidecar. etcd's Mutex keys waiters by lease, so two
// processes sharing the sidecar's one lease could not exclude each other; one
// lease per session makes them ordinary competing waiters. When the
// session closes (the process exited, even by SIGKILL) the lease is
// revoked and every lock and wait of that session ends at once; when the
// sidecar dies or is cut off, etcd expires the lease after the TTL.
//
// Its methods are safe for concurrent use.
type Locks struct {
	cli      *clientv3.Client
	ttl      int
	workerID string
	host     string
	logger   *slog.Logger
	clock    clockwork.Clock
	observer Observer
	tracer   trace.Tracer

	mu       sync.Mutex
	sessions map[*coord.Session]*sessionLocks
	closed   bool
	wg       sync.WaitGroup // watchers of lock leases and retried waiter removals
	ending   sync.WaitGroup // endSession calls revoking a lease
	stop     chan struct{}  // closed by Close: background retries give up
}

// Config configures Locks. The zero value of every field but WorkerID is
// usable.
type Config struct {
	// TTL is how long a session's lock lease lives without
	// keepalive, rounded up to whole seconds. Default (and minimum) 1s;
	// the sidecar passes its own lease TTL.
	TTL time.Duration
	// WorkerID names the sidecar in lockowners/.
	WorkerID string
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
	// Clock times lock waits (Lock's wait, the measured wait), the retries
	// of abandoned waiter removals, the owner records' start times and the
	// lock leases' trust windows (coord.Trust).
	// Default: the wall clock. The deadlines of single etcd calls are real
	// time whatever the clock.
	Clock clockwork.Clock
	// Observer is told how each Lock and TryLock ended, for metrics
	// (package sidecar/telemetry implements it). Default: none.
	Observer Observer
	// TracerProvider makes the baton.lock.wait spans. Default: a no-op
	// provider.
	TracerProvider trace.TracerProvider
}

// New returns a lock manager on cli. Call Close before closing cli.
func New(cli *clientv3.Client, cfg Config) *Locks {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	host, _ := os.Hostname()
	return &Locks{
		cli: cli, ttl: max(int((cfg.TTL+time.Second-1)/time.Second), 1), workerID: cfg.WorkerID, host: host,
		logger: cfg.Logger, clock: cfg.Clock, observer: cfg.Observer, tracer: cfg.TracerProvider.Tracer(TracerName),
		sessions: make(map[*coord.Session]*sessionLocks), stop: make(chan struct{}),
	}
}

// sessionLocks is the lock state of one session.
type sessionLocks struct {
	sess *coord.Session
	// grant serialises granting the lock lease, so that concurrent first
	// Locks of one session share one lease.
	grant sync.Mutex

	// Guarded by Locks.mu.
	es       *concurrency.Session // nil until the first Lock, or after its lease was lost
	trust    *coord.Trust         // es's trust window; nil with es
	esCancel context.CancelFunc
	held     map[string]*mutex
	busy     map[string]bool // names with a Lock or TryLock in flight
	closed   bool
	unhook   func()
}

// Held is a lock held by a session.
type Held struct {
	Name    string
	Token   int64
	Session string
}

func (l *Locks) state(sess *coord.Session) (*sessionLocks, error) {
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

// etcdSession returns the session's lock lease and its trust window,
// granting a lease when there is none or the last one was lost.
func (l *Locks) etcdSession(ctx context.Context, sl *sessionLocks) (*concurrency.Session, *coord.Trust, error) {
	sl.grant.Lock()
	defer sl.grant.Unlock()
	l.mu.Lock()
	es, trust := sl.es, sl.trust
	closed := sl.closed
	l.mu.Unlock()
	if closed {
		return nil, nil, ErrSessionClosed
	}
	if es != nil {
		select {
		case <-es.Done():
		default:
			return es, trust, nil
		}
	}
	// The keepalive runs until the session ends (esCancel), not just
	// for this call.
	kaCtx, cancel := context.WithCancel(context.Background())
	// Bounded: other Locks of the session wait for this grant.
	gctx, gcancel := context.WithTimeout(ctx, grantTimeout)
	sent := l.clock.Now() // etcd starts the TTL after this
	grant, err := l.cli.Grant(gctx, int64(l.ttl))
	gcancel()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	// The keepalive that the session below joins (etcd's client sends one
	// per lease whatever the number of listeners), read for its answers'
	// times; asked for first, so that it hears the first answer too.
	answers, err := l.cli.KeepAlive(kaCtx, grant.ID)
	if err != nil {
		cancel()
		l.revoke(grant.ID)
		return nil, nil, err
	}
	es, err = concurrency.NewSession(l.cli, concurrency.WithLease(grant.ID), concurrency.WithContext(kaCtx))
	if err != nil {
		cancel()
		l.revoke(grant.ID)
		return nil, nil, err
	}
	trust = coord.NewTrust(time.Duration(l.ttl)*time.Second, sent, coord.WithClock(l.clock))
	owner := LockOwner{
		WorkerID: l.workerID, Session: sl.sess.ID, Process: sl.sess.Process, Host: l.host,
		SinceMS: l.clock.Now().UnixMilli(), Lease: int64(grant.ID),
	}
	b, _ := json.Marshal(owner)
	if _, err := l.cli.Put(ctx, ownerKey(grant.ID), string(b), clientv3.WithLease(grant.ID)); err != nil {
		cancel()
		l.revoke(grant.ID)
		return nil, nil, err
	}
	l.mu.Lock()
	if sl.closed {
		l.mu.Unlock()
		cancel()
		l.revoke(grant.ID)
		return nil, nil, ErrSessionClosed
	}
	if sl.esCancel != nil {
		sl.esCancel()
	}
	sl.es, sl.trust, sl.esCancel = es, trust, cancel
	l.wg.Add(2)
	l.mu.Unlock()
	go l.watchLease(sl, es)
	go func() { defer l.wg.Done(); trust.Follow(answers) }() // ends with kaCtx or the lease
	return es, trust, nil
}

// watchLease waits for the lock lease of a session to end. When it ends
// while the session is still open, the lease was lost: the session's locks
// are gone, and the process is told through its session.
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
		sl.es, sl.trust = nil, nil
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

// HeldBy lists the locks the session holds.
func (l *Locks) HeldBy(sess *coord.Session) []Held {
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

// endSession runs when the session closes: revoking its lease
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
	sl.es, sl.trust, sl.esCancel = nil, nil, nil
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

package coord

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// ErrUnknownSession is returned for a session id that is not open.
var ErrUnknownSession = errors.New("coord: session is not open")

// Session is one attached process's session with the sidecar: it is open
// while that process's Attach stream is open.
type Session struct {
	ID string
	// Process is the human-readable name the process gave when it
	// attached (AttachRequest.process), "" when it gave none.
	Process string
	Started time.Time
	// PID is the process that opened the session (the peer of its Attach
	// stream), 0 when not known. Logs use it to name who sent a call that
	// carries no session, such as an answer to a claim.
	PID int32

	done chan struct{}
	push chan any

	mu       sync.Mutex
	closed   bool
	nextHook int
	hooks    map[int]func()
}

// Done is closed when the session closes.
func (s *Session) Done() <-chan struct{} { return s.done }

// Pushes delivers messages for the attached process (for example a cancel request).
// The Attach handler forwards them on the stream.
func (s *Session) Pushes() <-chan any { return s.push }

// Push queues a message for the attached process without blocking; it reports false
// when the session is closed or its queue is full.
func (s *Session) Push(msg any) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	select {
	case s.push <- msg:
		return true
	default:
		return false
	}
}

// OnClose registers f to run when the session closes. It returns a function
// that unregisters f, and false (without registering) when the session is
// already closed.
func (s *Session) OnClose(f func()) (remove func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return func() {}, false
	}
	id := s.nextHook
	s.nextHook++
	s.hooks[id] = f
	return func() {
		s.mu.Lock()
		delete(s.hooks, id)
		s.mu.Unlock()
	}, true
}

// Sessions is the registry of a sidecar's open sessions. Its methods are
// safe for concurrent use.
type Sessions struct {
	clock  clockwork.Clock
	mu     sync.Mutex
	open   map[string]*Session
	opened int64
	// changed is closed and replaced when a session opens or closes
	// (written under mu).
	changed chan struct{}
}

// NewSessions returns an empty registry. WithClock sets the clock of the
// sessions' start times (default: the wall clock).
func NewSessions(opts ...Option) *Sessions {
	return &Sessions{clock: options(opts).clock, open: make(map[string]*Session), changed: make(chan struct{})}
}

// Open opens a new session for the process named process.
func (r *Sessions) Open(process string) *Session { return r.OpenFor(process, 0) }

// OpenFor opens a new session for the process named process, whose id is
// pid.
func (r *Sessions) OpenFor(process string, pid int32) *Session {
	var b [12]byte
	_, _ = rand.Read(b[:])
	s := &Session{
		ID:      "s-" + hex.EncodeToString(b[:]),
		Process: process,
		Started: r.clock.Now(),
		PID:     pid,
		done:    make(chan struct{}),
		push:    make(chan any, 64),
		hooks:   make(map[int]func()),
	}
	r.mu.Lock()
	r.open[s.ID] = s
	r.opened++
	r.changedLocked()
	r.mu.Unlock()
	return s
}

// changedLocked wakes the callers of List waiting for a change. r.mu is
// held.
func (r *Sessions) changedLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// List returns the open sessions, oldest first, and a channel that is
// closed at the next change (a session opened or closed).
func (r *Sessions) List() ([]*Session, <-chan struct{}) {
	r.mu.Lock()
	out := make([]*Session, 0, len(r.open))
	for _, s := range r.open {
		out = append(out, s)
	}
	changed := r.changed
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b *Session) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, changed
}

// Opened returns the number of sessions opened since the registry was
// made.
func (r *Sessions) Opened() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened
}

// Get returns the open session with the given id.
func (r *Sessions) Get(id string) (*Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.open[id]
	if !ok {
		return nil, ErrUnknownSession
	}
	return s, nil
}

// OfPID returns the open sessions opened by process pid (none for pid 0),
// oldest first.
func (r *Sessions) OfPID(pid int32) []*Session {
	if pid == 0 {
		return nil
	}
	r.mu.Lock()
	var out []*Session
	for _, s := range r.open {
		if s.PID == pid {
			out = append(out, s)
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b *Session) int { return a.Started.Compare(b.Started) })
	return out
}

// Len returns the number of open sessions.
func (r *Sessions) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

// Close closes the session and runs its cleanups, in the caller's
// goroutine, before returning. Closing a closed session does nothing.
func (r *Sessions) Close(s *Session) {
	r.mu.Lock()
	if _, ok := r.open[s.ID]; ok {
		delete(r.open, s.ID)
		r.changedLocked()
	}
	r.mu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	hooks := s.hooks
	s.hooks = nil
	s.mu.Unlock()
	for _, f := range hooks {
		f()
	}
}

package chaos

import (
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"time"
)

// FencedStore is the output store of the chaos workers: a small HTTP
// server that keeps, per task, the highest fencing token it has seen and
// refuses any write carrying an older one, as a real output store (object
// storage with a conditional put, a database row with a token column)
// would. It records every request, accepted or not, for the checker.
type FencedStore struct {
	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup

	mu      sync.Mutex
	highest map[string]int64
	writes  []Write
}

// StartFencedStore serves on a free port of 127.0.0.1 until Close.
func StartFencedStore() (*FencedStore, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &FencedStore{ln: ln, highest: map[string]int64{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is host:port.
func (s *FencedStore) Addr() string { return s.ln.Addr().String() }

func (s *FencedStore) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind, Task, Worker string
		Token              int64
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Task == "" || (req.Kind != "begin" && req.Kind != "output" && req.Kind != "lock") {
		http.Error(w, "want {kind: begin|output|lock, task, token, worker}", http.StatusBadRequest)
		return
	}
	if ok := s.Put(req.Kind, req.Task, req.Worker, req.Token); !ok {
		http.Error(w, "stale fencing token", http.StatusConflict)
	}
}

// Put applies one write: accepted unless token is older than the
// highest seen for the task.
func (s *FencedStore) Put(kind, task, worker string, token int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := token >= s.highest[task]
	if ok {
		s.highest[task] = token
	}
	s.writes = append(s.writes, Write{Task: task, Token: token, Kind: kind, Worker: worker, Accepted: ok, At: time.Now()})
	return ok
}

// Writes returns a copy of the log, in the order the store applied it.
func (s *FencedStore) Writes() []Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Write(nil), s.writes...)
}

// Close stops the server.
func (s *FencedStore) Close() {
	s.srv.Close()
	s.wg.Wait()
}

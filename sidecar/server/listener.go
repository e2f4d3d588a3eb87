package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/batonhq/baton/gen/baton/v1/batonv1connect"
)

// ErrSocketInUse is returned when another process serves the socket path.
var ErrSocketInUse = errors.New("server: socket is in use by a live process")

// Listen opens the Unix socket at path with the given file mode and, when
// gid is not -1, group. A socket file that nothing listens on (left by a
// crash) is removed first; one that a live process serves is refused with
// ErrSocketInUse.
//
// The socket is bound in a new directory of mode 0700 beside path, given
// its mode and group there, and then renamed into place, so that it never
// exists at path with the umask's mode (a window in which another user
// could connect). When that directory's path would be too long for a
// socket address, it is bound at path and changed there instead.
func Listen(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if err := CheckSocket(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".b")
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	defer os.RemoveAll(tmp)
	bind := filepath.Join(tmp, "s")
	if len(bind) > 100 {
		bind = path
	}
	l, err := net.Listen("unix", bind)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	ln := &socketListener{Listener: l, path: path}
	fail := func(what string, err error) (net.Listener, error) {
		l.Close()
		os.Remove(bind)
		return nil, fmt.Errorf("server: %s socket: %w", what, err)
	}
	if err := os.Chmod(bind, mode); err != nil {
		return fail("chmod", err)
	}
	if gid >= 0 {
		if err := os.Chown(bind, -1, gid); err != nil {
			return fail("chown", err)
		}
	}
	if bind != path {
		if err := os.Rename(bind, path); err != nil {
			return fail("placing", err)
		}
	}
	return ln, nil
}

// socketListener removes its socket file when closed.
type socketListener struct {
	net.Listener
	path string
	once sync.Once
}

func (l *socketListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { os.Remove(l.path) })
	return err
}

// CheckSocket refuses a socket path that a live process serves and
// removes a stale socket file that nothing listens on.
func CheckSocket(path string) error {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("server: %s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("%w: %s", ErrSocketInUse, path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("server: probing %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("server: removing stale socket: %w", err)
		}
	}
	return nil
}

// Services are the handlers of the socket API.
type Services struct {
	Tasks  *TaskHandler
	Locks  *LockHandler
	Config *ConfigHandler
}

// Handler returns the HTTP handler serving the socket API: TaskService,
// LockService, ConfigService, gRPC reflection, and whatever extra handlers
// are given (Health among them: reflection lists grpc.health.v1.Health).
func Handler(svcs Services, opts []connect.HandlerOption, extra ...func(*http.ServeMux)) http.Handler {
	// Never compress a response: on a local socket it only costs CPU and
	// memory (a gzip writer holds about 1 MB while in use), yet clients
	// such as connect-go ask for gzip by default. Compressed requests are
	// still accepted.
	opts = append([]connect.HandlerOption{connect.WithCompressMinBytes(math.MaxInt32)}, opts...)
	mux := http.NewServeMux()
	mux.Handle(batonv1connect.NewTaskServiceHandler(svcs.Tasks, opts...))
	mux.Handle(batonv1connect.NewLockServiceHandler(svcs.Locks, opts...))
	mux.Handle(batonv1connect.NewConfigServiceHandler(svcs.Config, opts...))
	for _, f := range extra {
		f(mux)
	}
	reflector := grpcreflect.NewStaticReflector(
		batonv1connect.TaskServiceName,
		batonv1connect.LockServiceName,
		batonv1connect.ConfigServiceName,
		grpchealth.HealthV1ServiceName,
	)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	return mux
}

// HTTPServer returns an http.Server for h that speaks HTTP/1.1 and
// unencrypted HTTP/2 (h2c), with no timeouts that would cut long polls.
func HTTPServer(h http.Handler, baseCtx context.Context, t Timeouts) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	t = t.withDefaults()
	return &http.Server{
		Handler:           h,
		Protocols:         &p,
		ReadHeaderTimeout: 10 * time.Second,
		// Reading a request (headers and body; a streaming call's request
		// is read at its start) must finish within Read: a caller that
		// sends most of a large body and stalls is cut off. No write
		// timeout: long polls and Attach streams last.
		ReadTimeout: t.Read,
		IdleTimeout: t.Idle,
		// One h2c connection carries many calls: bound them too, as
		// --max-connections bounds connections.
		HTTP2:       &http.HTTP2Config{MaxConcurrentStreams: MaxStreams},
		BaseContext: func(net.Listener) context.Context { return baseCtx },
		ConnContext: withPeer,
	}
}

// MaxStreams bounds the calls in flight on one HTTP/2 connection.
const MaxStreams = 128

// Timeouts bound how long the socket server waits for callers.
type Timeouts struct {
	// Read bounds reading one request, body included. Default 30s.
	Read time.Duration
	// Idle closes a connection without calls in flight after this long.
	// Default 2m.
	Idle time.Duration
}

// Defaults of Timeouts.
const (
	DefaultReadTimeout = 30 * time.Second
	DefaultIdleTimeout = 2 * time.Minute
)

func (t Timeouts) withDefaults() Timeouts {
	if t.Read == 0 {
		t.Read = DefaultReadTimeout
	}
	if t.Idle == 0 {
		t.Idle = DefaultIdleTimeout
	}
	return t
}

package chaos

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/batonhq/baton/internal/childproc"
)

// startProcess starts exe in role with env, as a child the run owns.
// Stderr goes to logPath. When onLine is set it receives every stdout
// line (from the goroutine that reads them; it must not block long).
// ready, when set, is the stdout line to wait for before returning.
func startProcess(ctx context.Context, exe childproc.Exe, name, role, logPath string, env []string, onLine func(string), ready string) (*childproc.Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cfg := childproc.Config{
		Name:      name,
		Exe:       exe,
		Env:       append([]string{roleEnv + "=" + role, "CHAOS_NAME=" + name}, env...),
		StderrTo:  logf,
		OnStdout:  onLine,
		AfterExit: func() { logf.Close() },
	}
	if ready != "" {
		cfg.Ready = func(line string) bool { return line == ready }
	}
	p, err := childproc.Start(cfg)
	if err != nil {
		logf.Close()
		return nil, err
	}
	if ready == "" {
		return p, nil
	}
	if err := p.WaitReady(ctx); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%w (log %s)", err, logPath)
	}
	return p, nil
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

package batoncli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/embedetcd"
	"github.com/batonhq/baton/sidecar/server"
	"github.com/urfave/cli/v2"
)

func devCommand() *cli.Command {
	flags := append([]cli.Flag{
		&cli.StringFlag{Name: "data-dir", Value: ".baton", EnvVars: []string{"BATON_DATA_DIR"}, Usage: "where the embedded etcd keeps its data"},
		&cli.StringFlag{Name: "etcd-listen", Value: "127.0.0.1:2379", EnvVars: []string{"BATON_ETCD_LISTEN"}, Usage: "address the embedded etcd serves clients on"},
	}, sidecarFlags("", DefaultDevAdminAddr, true)...)
	return &cli.Command{
		Name:  "dev",
		Usage: "run an embedded single-member etcd and one sidecar, for a laptop",
		Description: "Starts etcd inside the process (data under --data-dir, auto-compaction on) and a sidecar on\n" +
			"--socket (default DATA-DIR/baton.sock). Other sidecars and the CLI reach the etcd at\n" +
			"--etcd-listen. Metrics and health on --admin-addr (default 127.0.0.1:9465, one above `baton sidecar`'s,\n" +
			"so both run on one machine), and the operator's web page at /ui/ there (--ui=false turns it off). Traces follow the OTEL_* variables. Stops cleanly on SIGINT or SIGTERM.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			dir := c.String("data-dir")
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return fmt.Errorf("data-dir: %w", err)
			}
			cfg, err := sidecarConfig(c)
			if err != nil {
				return err
			}
			if !c.IsSet("socket") {
				cfg.Socket = filepath.Join(dir, "baton.sock")
			}
			cfg.Etcd.Endpoints = []string{c.String("etcd-listen")}
			unlock, err := lockDir(dir)
			if err != nil {
				return err
			}
			defer unlock()
			// etcd's authentication is on, with a root password kept
			// 0600 in the data directory: the socket's mode would mean
			// little if any local user could write to etcd directly.
			pwFile, password, err := rootPassword(dir)
			if err != nil {
				return err
			}
			cfg.Etcd.Username, cfg.Etcd.Password = "root", password
			if host, _, err := net.SplitHostPort(c.String("etcd-listen")); err == nil && !isLoopback(host) {
				fmt.Fprintf(c.App.ErrWriter, "WARNING: baton dev's etcd listens on %s, beyond this machine: anyone who can reach it and learns %s's password controls every task. Use 127.0.0.1 unless you mean it.\n", c.String("etcd-listen"), pwFile)
			}
			if err := server.CheckSocket(cfg.Socket); err != nil {
				return err
			}
			flush, err := sidecarTracing(c, &cfg)
			if err != nil {
				return err
			}
			defer flush()
			sc, err := sidecar.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(c.Context)
			defer stop()
			startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			etcd, err := embedetcd.Start(startCtx, embedetcd.Config{
				Dir:          dir,
				ClientAddr:   c.String("etcd-listen"),
				LogFile:      filepath.Join(dir, "etcd.log"),
				RootPassword: password,
			})
			cancel()
			if err != nil {
				return fmt.Errorf("etcd-listen %s: %w", c.String("etcd-listen"), err)
			}
			defer etcd.Close()
			runCtx, cancelRun := context.WithCancel(ctx)
			defer cancelRun()
			done := make(chan error, 1)
			go func() { done <- sc.Run(runCtx) }()
			select {
			case <-sc.Ready():
				admin := "off"
				if a := sc.AdminAddr(); a != nil {
					scheme := "http://"
					if cfg.AdminCert != "" {
						scheme = "https://"
					}
					admin = scheme + a.String() + " (/metrics /healthz /readyz)"
					if cfg.UI {
						admin += "\n  web:    " + scheme + a.String() + "/ui/"
					}
				}
				fmt.Fprintf(c.App.Writer, "baton dev ready\n  socket: %s\n  etcd:   %s (user root, password in %s)\n  queues: %v (workers submit to: %v)\n  admin:  %s\nexport BATON_SOCKET=%s BATON_ENDPOINTS=%s BATON_ETCD_PASSWORD_FILE=%s\n",
					cfg.Socket, etcd.Endpoint(), pwFile, cfg.Queues, submitQueues(cfg), admin, cfg.Socket, etcd.Endpoint(), pwFile)
			case err := <-done:
				return err
			}
			select {
			case err := <-done:
				return err
			case err := <-etcd.Err():
				cancelRun()
				<-done
				return fmt.Errorf("embedded etcd: %w", err)
			}
		},
	}
}

// lockDir takes an exclusive lock on the data directory, so that a second
// `baton dev` on the same directory fails at once instead of waiting for
// etcd's database lock.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "dev.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data-dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data-dir %s is in use by another baton dev", dir)
	}
	return func() { f.Close() }, nil
}

// rootPassword returns the path and contents of the data directory's etcd
// root password file, writing a new random password (mode 0600) when
// there is none.
func rootPassword(dir string) (path, password string, err error) {
	path, err = filepath.Abs(filepath.Join(dir, "etcd-root.password"))
	if err != nil {
		return "", "", err
	}
	if b, err := os.ReadFile(path); err == nil {
		if pw := strings.TrimSpace(string(b)); pw != "" {
			return path, pw, nil
		}
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", err
	}
	password = hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("data-dir: writing the etcd password: %w", err)
	}
	return path, password, nil
}

// isLoopback reports whether host names this machine only.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// submitQueues are the queues workers may submit to through the sidecar
// of cfg: its --submit-queue values, by default its queues.
func submitQueues(cfg sidecar.Config) []string {
	if len(cfg.SubmitQueues) > 0 {
		return cfg.SubmitQueues
	}
	return cfg.Queues
}

package batoncli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	}, sidecarFlags("", DefaultDevAdminAddr)...)
	return &cli.Command{
		Name:  "dev",
		Usage: "run an embedded single-member etcd and one sidecar, for a laptop",
		Description: "Starts etcd inside the process (data under --data-dir, auto-compaction on) and a sidecar on\n" +
			"--socket (default DATA-DIR/baton.sock). Other sidecars and the CLI reach the etcd at\n" +
			"--etcd-listen. Metrics and health on --admin-addr (default 127.0.0.1:9465, one above `baton sidecar`'s,\n" +
			"so both run on one machine). Traces follow the OTEL_* variables. Stops cleanly on SIGINT or SIGTERM.",
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
				Dir:        dir,
				ClientAddr: c.String("etcd-listen"),
				LogFile:    filepath.Join(dir, "etcd.log"),
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
					admin = "http://" + a.String() + " (/metrics /healthz /readyz)"
				}
				fmt.Fprintf(c.App.Writer, "baton dev ready\n  socket: %s\n  etcd:   %s\n  queues: %v\n  admin:  %s\nexport BATON_SOCKET=%s BATON_ENDPOINTS=%s\n",
					cfg.Socket, etcd.Endpoint(), cfg.Queues, admin, cfg.Socket, etcd.Endpoint())
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

package chaos

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cluster is a three-member etcd cluster, each member its own process on
// 127.0.0.1 that can be killed, paused and restarted with its data.
type Cluster struct {
	exe     childproc.Exe
	dir     string
	members []*member
	// Client reaches every member directly (not through any proxy); the
	// harness uses it to submit, probe and read the final state.
	Client *clientv3.Client
}

type member struct {
	name, client, peer, dir string

	mu   sync.Mutex
	proc *childproc.Process
}

// StartCluster starts n members under dir and waits until all serve.
func StartCluster(ctx context.Context, exe childproc.Exe, dir string, n int) (*Cluster, error) {
	c := &Cluster{exe: exe, dir: dir}
	var initial []string
	for i := range n {
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		m := &member{name: fmt.Sprintf("m%d", i), client: fmt.Sprintf("127.0.0.1:%d", cp), peer: fmt.Sprintf("http://127.0.0.1:%d", pp)}
		m.dir = filepath.Join(dir, m.name)
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	cluster := strings.Join(initial, ",")
	errs := make(chan error, n)
	for i := range c.members {
		go func() { errs <- c.start(ctx, i, cluster) }()
	}
	var err error
	for range n {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	// The harness's own namespace: its probe writes stay out of the
	// sidecars' keys.
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: c.Endpoints(), Namespace: "chaos-harness", DialTimeout: 2 * time.Second})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Client = cli
	return c, nil
}

func (c *Cluster) start(ctx context.Context, i int, cluster string) error {
	m := c.members[i]
	env := []string{"CHAOS_ETCD_NAME=" + m.name, "CHAOS_ETCD_DIR=" + m.dir, "CHAOS_ETCD_CLIENT=http://" + m.client,
		"CHAOS_ETCD_PEER=" + m.peer, "CHAOS_ETCD_CLUSTER=" + cluster}
	p, err := startProcess(ctx, c.exe, "etcd-"+m.name, "etcd", filepath.Join(c.dir, m.name+".log"), env, nil, "READY")
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return nil
}

func (c *Cluster) cluster() string {
	var s []string
	for _, m := range c.members {
		s = append(s, m.name+"="+m.peer)
	}
	return strings.Join(s, ",")
}

// Endpoints returns the members' client addresses, host:port.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client)
	}
	return eps
}

// Size is the number of members.
func (c *Cluster) Size() int { return len(c.members) }

// Leader returns the index of the member that says it leads, asking each
// running member for its status.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	for i, m := range c.members {
		if !c.Up(i) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Client.Status(sctx, m.client)
		cancel()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return i, nil
		}
	}
	return -1, errors.New("no member says it leads")
}

// Up reports whether member i's process runs.
func (c *Cluster) Up(i int) bool {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil && !m.proc.Exited()
}

// Kill sends SIGKILL to member i and waits for it to exit.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Pause stops member i with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(i int) error  { return c.signal(i, syscall.SIGSTOP) }
func (c *Cluster) Resume(i int) error { return c.signal(i, syscall.SIGCONT) }

func (c *Cluster) signal(i int, sig syscall.Signal) error {
	m := c.members[i]
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("member %d not running", i)
	}
	return p.Signal(sig)
}

// Restart starts a killed member again on its data directory and waits
// until it serves.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if c.Up(i) {
		return fmt.Errorf("member %d still runs", i)
	}
	return c.start(ctx, i, c.cluster())
}

// Close kills every member.
func (c *Cluster) Close() {
	if c.Client != nil {
		c.Client.Close()
	}
	for i := range c.members {
		c.Kill(i)
	}
}

package batoncli

import (
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// connect opens the namespaced etcd client of the global flags, checks that
// etcd answers, and returns it with a Store on it that records the
// operator's actions (auditWriter) and whose Submit is refused near
// --etcd-quota-bytes. Close the client.
func connect(c *cli.Context) (*clientv3.Client, *workqueue.Store, error) {
	ecfg := etcdConfig(c)
	etcd, err := etcdconn.New(ecfg)
	if err != nil {
		return nil, nil, err
	}
	if err := etcdconn.Ping(c.Context, etcd, ecfg.Endpoints, 10*time.Second); err != nil {
		etcd.Close()
		return nil, nil, err
	}
	aw, err := auditWriter(c, etcd)
	if err != nil {
		etcd.Close()
		return nil, nil, err
	}
	adm, err := workqueue.NewAdmission(workqueue.AdmissionConfig{Maintenance: etcd.Maintenance, Endpoints: ecfg.Endpoints, QuotaBytes: c.Int64("etcd-quota-bytes")})
	if err != nil {
		etcd.Close()
		return nil, nil, err
	}
	store, err := workqueue.NewStore(etcd.KV, workqueue.Config{Audit: aw, Admission: adm})
	if err != nil {
		etcd.Close()
		return nil, nil, err
	}
	return etcd, store, nil
}

// auditWriter records the operator actions of this process (audit
// package): its OS user, host and pid, and its etcd user.
func auditWriter(c *cli.Context, etcd *clientv3.Client) (*audit.Writer, error) {
	return audit.NewWriter(etcd.KV, audit.WriterConfig{Actor: audit.LocalActor(c.String("etcd-user"))})
}

// withEtcd is the action of a command that reads etcd and prints results:
// it runs check (usage errors come before any connection; may be nil),
// reads -o, connects, runs f and closes the connection.
func withEtcd(check func(*cli.Context) error, f func(c *cli.Context, etcd *clientv3.Client, asJSON bool) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if check != nil {
			if err := check(c); err != nil {
				return err
			}
		}
		asJSON, err := jsonOutput(c)
		if err != nil {
			return err
		}
		etcd, _, err := connect(c)
		if err != nil {
			return err
		}
		defer etcd.Close()
		return f(c, etcd, asJSON)
	}
}

package etcdconn_test

import (
	"log"

	"github.com/batonhq/baton/sidecar/etcdconn"
)

// A client of the deployment "baton" on a local etcd: its keys are read
// and written below "baton/" (Get of "workers/" reads "baton/workers/").
// The same Config is sidecar.Config's Etcd.
func ExampleNew() {
	cli, err := etcdconn.New(etcdconn.Config{Endpoints: []string{"127.0.0.1:2379"}, Namespace: "baton"})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
}

package bench

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar/etcdconn"
)

// The systems measured, in the order they are run at each consumer count.
const (
	SystemCeiling = "ceiling"
	SystemRecipes = "recipes"
	SystemNaive   = "naive"
	SystemBaton   = "baton"
)

// Systems lists every system.
var Systems = []string{SystemCeiling, SystemRecipes, SystemNaive, SystemBaton}

// SystemsAll stands for every system in Config.Systems.
const SystemsAll = "all"

// Defaults of Config.
var (
	DefaultConsumers = []int{1, 8, 32, 128}
	DefaultDepths    = []int{100, 100_000}
	DefaultFleet     = []int{8, 64, 256}
)

// More defaults of Config, and the largest values it accepts.
const (
	DefaultTasks           = 1000
	DefaultSidecars        = 4
	DefaultDispatchSamples = 200
	DefaultSamples         = 300
	maxConsumers           = 1024
	maxSidecars            = 64
	maxDepth               = 1_000_000
	maxFleet               = 2000
)

// Config is one bench run. The zero value of each field means its
// documented default, except Etcd and Sidecar, which are required.
type Config struct {
	// Etcd is the server to measure on. Its Namespace is the prefix under
	// which the run's keys go (each system and consumer count gets its own
	// prefix below it); everything written is deleted afterwards.
	Etcd etcdconn.Config
	// Embedded says the etcd is the bench's own (`baton bench` without
	// --endpoints): its history is compacted after each measurement, so
	// that later ones do not pay for earlier ones' garbage. A shared
	// cluster is never compacted.
	Embedded bool
	// Sidecar starts `baton`; the bench runs `baton sidecar` processes
	// with it. Required when baton, overhead or depth is measured.
	Sidecar childproc.Exe
	// EtcdPID is the etcd process's id when the bench started it
	// (StartEtcd), so that etcd's CPU time is measured apart; 0 when etcd
	// is elsewhere.
	EtcdPID int
	// EtcdMetrics is the URL of etcd's Prometheus metrics, which the fleet
	// sweep reads. Default http://ENDPOINT/metrics of the first endpoint
	// (https when Etcd has a CA certificate).
	EtcdMetrics string

	// Fleet is the fleet sweep: at each size, that many in-process
	// sidecars, one consumer each (fleetrun.go). Default 8, 64, 256.
	Fleet []int
	// FleetTasks is the backlog the fleet drains at each size, and the
	// tasks of each affinity run. Default 1000.
	FleetTasks int
	// SkipFleet and SkipAffinity leave out the fleet sweep and the
	// affinity run.
	SkipFleet, SkipAffinity bool

	// Systems to compare at each consumer count, with a few sidecar
	// processes serving many consumers each (the anchors, then the
	// sidecar's overhead and claim cost by queue depth). Default: none;
	// SystemsAll stands for all of Systems.
	Systems []string
	// Consumers is the sweep of consumer counts. Default 1, 8, 32, 128.
	Consumers []int
	// Tasks is how many tasks each system delivers at each consumer count;
	// the ceiling writes 5 × Tasks transactions. Default 1000.
	Tasks int
	// Sidecars is how many sidecar processes baton runs (fewer when there
	// are fewer consumers); consumers are spread evenly over them. The
	// anchors use as many etcd client connections. Default 4.
	Sidecars int
	// DispatchSamples is how many tasks are submitted one at a time to
	// idle workers to measure baton's dispatch latency, in the systems
	// comparison and at each fleet size. Default 200.
	DispatchSamples int
	// Samples is how many round trips the overhead and depth measurements
	// time. Default 300.
	Samples int
	// Depths are the queue depths at which claim cost is measured; none
	// skips it. Default 100 and 100,000.
	Depths []int
	// SkipDepth and SkipOverhead leave those measurements out of the
	// systems comparison.
	SkipDepth, SkipOverhead bool
	// Progress receives a line as each measurement starts and ends; nil
	// discards them.
	Progress io.Writer
}

func (c *Config) setDefaults() {
	if slices.Contains(c.Systems, SystemsAll) {
		c.Systems = slices.Clone(Systems)
	}
	if len(c.Fleet) == 0 {
		c.Fleet = slices.Clone(DefaultFleet)
	}
	if c.FleetTasks == 0 {
		c.FleetTasks = DefaultTasks
	}
	if c.EtcdMetrics == "" && len(c.Etcd.Endpoints) > 0 {
		scheme := "http://"
		if c.Etcd.CACert != "" {
			scheme = "https://"
		}
		ep := c.Etcd.Endpoints[0]
		if i := strings.Index(ep, "://"); i >= 0 {
			ep = ep[i+3:]
		}
		c.EtcdMetrics = scheme + ep + "/metrics"
	}
	if len(c.Consumers) == 0 {
		c.Consumers = slices.Clone(DefaultConsumers)
	}
	if c.Tasks == 0 {
		c.Tasks = DefaultTasks
	}
	if c.Sidecars == 0 {
		c.Sidecars = DefaultSidecars
	}
	if c.DispatchSamples == 0 {
		c.DispatchSamples = DefaultDispatchSamples
	}
	if c.Samples == 0 {
		c.Samples = DefaultSamples
	}
	if c.Depths == nil {
		c.Depths = slices.Clone(DefaultDepths)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Validate reports the first setting that is wrong, named as its
// `baton bench` flag. Unset fields count as their defaults; Etcd and
// Sidecar are checked by Run.
func (c Config) Validate() error {
	c.setDefaults()
	return c.validate()
}

func (c *Config) validate() error {
	for _, s := range c.Systems {
		if !slices.Contains(Systems, s) {
			return fmt.Errorf("systems: %q is not one of %v or %q", s, Systems, SystemsAll)
		}
	}
	for _, n := range c.Fleet {
		if n < 1 || n > maxFleet {
			return fmt.Errorf("fleet: %d is outside 1..%d", n, maxFleet)
		}
	}
	if c.FleetTasks < 1 {
		return fmt.Errorf("fleet-tasks: %d must be at least 1", c.FleetTasks)
	}
	for _, n := range c.Consumers {
		if n < 1 || n > maxConsumers {
			return fmt.Errorf("consumers: %d is outside 1..%d", n, maxConsumers)
		}
	}
	switch {
	case c.Tasks < 1:
		return fmt.Errorf("tasks: %d must be at least 1", c.Tasks)
	case c.Sidecars < 1 || c.Sidecars > maxSidecars:
		return fmt.Errorf("sidecars: %d is outside 1..%d", c.Sidecars, maxSidecars)
	case c.DispatchSamples < 1:
		return fmt.Errorf("dispatch-samples: %d must be at least 1", c.DispatchSamples)
	case c.Samples < 1:
		return fmt.Errorf("samples: %d must be at least 1", c.Samples)
	}
	for _, d := range c.Depths {
		if d < 1 || d > maxDepth {
			return fmt.Errorf("depths: %d is outside 1..%d", d, maxDepth)
		}
	}
	return nil
}

// validateRun checks what Run needs beyond the flags.
func (c *Config) validateRun() error {
	switch {
	case len(c.Etcd.Endpoints) == 0:
		return errors.New("endpoints: at least one etcd endpoint is required")
	case c.Etcd.Namespace == "":
		return errors.New("namespace: must not be empty")
	case c.needsSidecar() && c.Sidecar.Path == "":
		return errors.New("sidecar: the path of the baton binary is required")
	}
	return nil
}

func (c *Config) needsSidecar() bool {
	return slices.Contains(c.Systems, SystemBaton) || c.compares() && (!c.SkipOverhead || !c.SkipDepth && len(c.Depths) > 0)
}

// compares says whether the systems comparison (and with it the overhead
// and depth measurements) runs.
func (c *Config) compares() bool { return len(c.Systems) > 0 }

func (c *Config) has(system string) bool { return slices.Contains(c.Systems, system) }

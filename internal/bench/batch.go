package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar/etcdconn"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// The batch mode of `baton bench` (--batch): what a big JSONL batch costs.
// It writes a file of GLM-TTS lines (246 bytes each, the corpus lines
// issue 17 measured), submitted as batch batchName, then
//
//  1. submit: `baton submit` of the file as a child process with no bound
//     and no workers: wall time, lines per second, peak RSS (the child's
//     rusage), and etcd's dbSize growth per pending task (compacted and
//     defragmented before and after, so the figure is what the quota
//     counts, not history);
//  2. drain: the fleet (one in-process sidecar per worker, one consumer
//     each) claims and completes them all: time, and after compaction and
//     defragmentation the bytes per finished task;
//  3. fed: in a fresh namespace the same fleet drains the file while
//     `baton submit --max-pending` feeds it: the time from the start of the
//     submit to the last completion, the submit's peak RSS, and the most
//     tasks the feeder waited on.

// batchName names the batch the file is submitted as (`baton submit
// --batch`): its name is stored with each task, and its member keys are
// part of what a task costs.
const batchName = "corpus-2026-12"

// BatchConfig is one batch measurement.
type BatchConfig struct {
	Etcd       etcdconn.Config // Namespace: the prefix of the run's namespaces
	Baton      childproc.Exe   // the baton binary, for `baton submit`
	Lines      int             // lines of the file
	Workers    int             // sidecars, one consumer each
	MaxPending int             // --max-pending of the fed run
	SkipDrain  bool            // delete the submitted tasks instead of draining them (phase 2)
	QuotaBytes int64           // etcd's --quota-backend-bytes, for baton submit's admission control (0: 2 GiB)
	// SubmitNamespace, when set, is the namespace of phase 1, whose bytes
	// are measured: a deployment's own (the run's etcd is its own), so
	// that the keys are as long as a deployment's. Otherwise phase 1 runs
	// under Etcd.Namespace like the others, whose run-unique prefix makes
	// every key ~30 bytes longer (~60 a task) than a deployment's.
	SubmitNamespace string
	Dir             string // for the file and the sockets
	Progress        io.Writer
}

// BatchReport is what RunBatch measured.
type BatchReport struct {
	Lines      int `json:"lines"`
	LineBytes  int `json:"line_bytes"`
	Workers    int `json:"workers"`
	MaxPending int `json:"max_pending"`

	SubmitSeconds     float64 `json:"submit_seconds"`
	SubmitLinesPerSec float64 `json:"submit_lines_per_second"`
	SubmitPeakRSS     int64   `json:"submit_peak_rss_bytes"`
	BytesPerPending   float64 `json:"etcd_bytes_per_pending_task"`

	DrainSeconds     float64 `json:"drain_seconds"`
	BytesPerFinished float64 `json:"etcd_bytes_per_finished_task"`

	FedSeconds        float64 `json:"fed_seconds"`
	FedTasksPerSec    float64 `json:"fed_tasks_per_second"`
	FedSubmitPeakRSS  int64   `json:"fed_submit_peak_rss_bytes"`
	FedMostUnfinished int     `json:"fed_most_unfinished"`

	DBSizeBase int64 `json:"etcd_db_size_base_bytes"`
}

// glmLine is the i-th line of a GLM-TTS batch file: 246 bytes and a
// newline.
func glmLine(i int) string {
	l := fmt.Sprintf(`{"uttid":"utt_%08d","prompt_text":"The quick brown fox jumps over the lazy dog near the river bank.","prompt_speech":"prompts/spk_%04d.wav","syn_text":""}`, i, i%1000)
	return strings.Replace(l, `"syn_text":""`, `"syn_text":"`+strings.Repeat("x", 246-len(l))+`"`, 1)
}

// RunBatch measures a batch of cfg.Lines lines.
func RunBatch(ctx context.Context, cfg BatchConfig) (*BatchReport, error) {
	rep := &BatchReport{Lines: cfg.Lines, LineBytes: len(glmLine(0)), Workers: cfg.Workers, MaxPending: cfg.MaxPending}
	file := filepath.Join(cfg.Dir, "batch.jsonl")
	if err := writeBatchFile(file, cfg.Lines); err != nil {
		return nil, err
	}
	raw, err := etcdconn.New(cfg.Etcd) // Status, Compact and Defragment are not namespaced
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	settled := func() (int64, error) { // compact, defragment, and read dbSize
		st, err := raw.Status(ctx, cfg.Etcd.Endpoints[0])
		if err != nil {
			return 0, err
		}
		if _, err := raw.Compact(ctx, st.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !strings.Contains(err.Error(), "compacted") {
			return 0, err
		}
		for _, ep := range cfg.Etcd.Endpoints {
			if _, err := raw.Defragment(ctx, ep); err != nil {
				return 0, err
			}
		}
		if st, err = raw.Status(ctx, cfg.Etcd.Endpoints[0]); err != nil {
			return 0, err
		}
		return st.DbSize, nil
	}
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Progress, "batch: "+format+"\n", args...) }

	base, err := settled()
	if err != nil {
		return nil, err
	}
	rep.DBSizeBase = base
	ns1 := cmp.Or(cfg.SubmitNamespace, cfg.Etcd.Namespace+".batch-submit")
	logf("submit of %d lines, no bound, no workers", cfg.Lines)
	res, err := runSubmit(ctx, cfg, ns1, file, cfg.Lines, nil)
	if err != nil {
		return nil, err
	}
	rep.SubmitSeconds, rep.SubmitPeakRSS = res.wall.Seconds(), res.peakRSS
	rep.SubmitLinesPerSec = float64(cfg.Lines) / res.wall.Seconds()
	size, err := settled()
	if err != nil {
		return nil, err
	}
	rep.BytesPerPending = float64(size-base) / float64(cfg.Lines)
	logf("%.1fs, %.0f lines/s, peak RSS %.1f MB, %.0f etcd bytes per pending task", rep.SubmitSeconds, rep.SubmitLinesPerSec, float64(res.peakRSS)/1e6, rep.BytesPerPending)

	if cfg.SkipDrain {
		logf("drain left out (--batch-skip-drain): deleting the tasks")
		if err := deletePrefix(ctx, raw, ns1+"/", 10000); err != nil {
			return nil, err
		}
	} else {
		logf("drain by %d workers", cfg.Workers)
		start := time.Now()
		if err := drainBatch(ctx, cfg, ns1, cfg.Lines, func() error { return nil }); err != nil {
			return nil, err
		}
		rep.DrainSeconds = time.Since(start).Seconds()
		if size, err = settled(); err != nil {
			return nil, err
		}
		rep.BytesPerFinished = float64(size-base) / float64(cfg.Lines)
		logf("%.1fs; %.0f etcd bytes per finished task", rep.DrainSeconds, rep.BytesPerFinished)
	}

	ns2 := cfg.Etcd.Namespace + ".batch-fed"
	logf("drain by %d workers fed by baton submit --max-pending %d", cfg.Workers, cfg.MaxPending)
	var fed submitResult
	start := time.Now()
	err = drainBatch(ctx, cfg, ns2, cfg.Lines, func() error {
		var err error
		fed, err = runSubmit(ctx, cfg, ns2, file, cfg.MaxPending, func(line string) {
			if n, ok := unfinishedIn(line); ok {
				rep.FedMostUnfinished = max(rep.FedMostUnfinished, n)
			}
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	rep.FedSeconds = time.Since(start).Seconds()
	rep.FedTasksPerSec = float64(cfg.Lines) / rep.FedSeconds
	rep.FedSubmitPeakRSS = fed.peakRSS
	logf("%.1fs, %.0f tasks/s, submit's peak RSS %.1f MB", rep.FedSeconds, rep.FedTasksPerSec, float64(fed.peakRSS)/1e6)
	for _, ns := range []string{ns1, ns2} {
		if err := deletePrefix(ctx, raw, ns+"/", 10000); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// deletePrefix deletes the keys under prefix n at a time: a million
// tasks' keys in one request outlast etcd's request timeout ("etcdserver:
// request timed out", which ended a 1M-line run).
func deletePrefix(ctx context.Context, kv clientv3.KV, prefix string, n int64) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	for {
		resp, err := kv.Get(ctx, prefix, clientv3.WithRange(end), clientv3.WithLimit(n), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		last := string(resp.Kvs[len(resp.Kvs)-1].Key)
		if _, err := kv.Delete(ctx, prefix, clientv3.WithRange(last+"\x00")); err != nil {
			return err
		}
	}
}

func writeBatchFile(path string, lines int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range lines {
		if _, err := w.WriteString(glmLine(i) + "\n"); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type submitResult struct {
	wall    time.Duration
	peakRSS int64
}

// runSubmit runs `baton submit --batch batchName --max-pending maxPending FILE` in namespace
// ns as a child process; each line it prints on stderr goes to line.
func runSubmit(ctx context.Context, cfg BatchConfig, ns, file string, maxPending int, line func(string)) (submitResult, error) {
	start := time.Now()
	p, err := childproc.Start(childproc.Config{
		Name: "baton submit",
		Exe:  cfg.Baton,
		Args: []string{"submit", "--queue", queue, "--batch", batchName, "--max-pending", strconv.Itoa(maxPending),
			"--etcd-quota-bytes", strconv.FormatInt(cmp.Or(cfg.QuotaBytes, workqueue.DefaultQuotaBytes), 10), file},
		Env:      etcdEnv(cfg.Etcd, ns),
		OnStderr: line,
	})
	if err != nil {
		return submitResult{}, err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Kill()
		return submitResult{}, ctx.Err()
	}
	err = p.Wait()
	wall := time.Since(start)
	if err != nil {
		return submitResult{}, err
	}
	var rss int64
	if ru, ok := p.State().SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10 // kilobytes on Linux
	}
	return submitResult{wall: wall, peakRSS: rss}, nil
}

// unfinishedIn reads the unfinished count from a progress line of
// `baton submit` ("submit 40/300 996/s 40 unfinished ETA 0s").
func unfinishedIn(line string) (int, bool) {
	f := strings.Fields(line)
	for i := 1; i < len(f); i++ {
		if f[i] == "unfinished" {
			n, err := strconv.Atoi(f[i-1])
			return n, err == nil
		}
	}
	return 0, false
}

// drainBatch starts the fleet in namespace ns, attaches a consumer to each
// sidecar, runs feed, and returns once the consumers completed tasks
// tasks.
func drainBatch(ctx context.Context, cfg BatchConfig, ns string, tasks int, feed func() error) error {
	ec := cfg.Etcd
	ec.Namespace = ns
	f, err := startFleet(ctx, ec, cfg.Dir, cfg.Workers)
	if err != nil {
		return err
	}
	cs := f.clients()
	defer closeClients(cs)
	err = func() error {
		sess, err := attach(ctx, cs)
		if err != nil {
			return err
		}
		defer sess.close()
		var done atomic.Int64
		all := make(chan struct{})
		var h hiccups
		g, gctx := errgroup.WithContext(ctx)
		cctx, stop := context.WithCancel(gctx)
		defer stop()
		for i, c := range cs {
			g.Go(func() error {
				return consume(cctx, c, sess.ids[i], time.Second, &h, func(*batonv1.Task, time.Time) error {
					if done.Add(1) == int64(tasks) {
						close(all)
					}
					return nil
				})
			})
		}
		g.Go(func() error {
			defer func() {
				select {
				case <-all:
				case <-gctx.Done():
				}
				stop()
			}()
			return feed()
		})
		err = g.Wait()
		if err == nil && done.Load() < int64(tasks) {
			err = fmt.Errorf("%d of %d tasks completed", done.Load(), tasks)
		}
		if u, l, a := h.unavailable.Load(), h.lostClaims.Load(), h.ambiguous.Load(); u+l+a > 0 {
			fmt.Fprintf(cfg.Progress, "batch: retried: %d Next answered UNAVAILABLE, %d claims lost; %d Completes answered UNAVAILABLE then claim lost (counted as done)\n", u, l, a)
		}
		return err
	}()
	return errors.Join(err, f.stop())
}

// WriteText prints the report as a short table.
func (r *BatchReport) WriteText(w io.Writer) error {
	drain := fmt.Sprintf("drain by the workers            %.1f s   %.0f tasks/s\netcd bytes per finished task    %.0f\n",
		r.DrainSeconds, float64(r.Lines)/max(r.DrainSeconds, 1e-9), r.BytesPerFinished)
	if r.DrainSeconds == 0 {
		drain = "drain by the workers            left out (--batch-skip-drain)\n"
	}
	_, err := fmt.Fprintf(w, `batch %s of %d GLM-TTS lines (%d bytes each), %d workers
submit (no bound, no workers)   %.1f s   %.0f lines/s   peak RSS %.1f MB
etcd bytes per pending task     %.0f
%sfed drain (--max-pending %d)    %.1f s   %.0f tasks/s   submit's peak RSS %.1f MB   most unfinished seen %d
`, batchName, r.Lines, r.LineBytes, r.Workers, r.SubmitSeconds, r.SubmitLinesPerSec, float64(r.SubmitPeakRSS)/1e6, r.BytesPerPending,
		drain, r.MaxPending, r.FedSeconds, r.FedTasksPerSec, float64(r.FedSubmitPeakRSS)/1e6, r.FedMostUnfinished)
	return err
}

// WriteJSON prints the report as JSON.
func (r *BatchReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

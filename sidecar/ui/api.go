package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/registry"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// Page sizes.
const (
	defaultPage = 50
	maxPage     = 500
)

// writeJSON writes v as JSON (HTML characters escaped, never sniffed as
// HTML), not to be cached.
func writeJSON(w http.ResponseWriter, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// writeError writes {"error": msg} with status code.
func writeError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// fail answers err: the library's refusals with their own message and
// code, anything else as an internal error, logged.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error) {
	var se *workqueue.StateError
	var qi *workqueue.InvalidError
	var ci *configdoc.InvalidError
	switch {
	case errors.Is(err, workqueue.ErrNotFound):
		writeError(w, http.StatusNotFound, "no such task (never submitted, or removed after its retention period)")
	case errors.Is(err, configdoc.ErrNotFound):
		writeError(w, http.StatusNotFound, "no such config document")
	case errors.As(err, &se):
		writeError(w, http.StatusConflict, se.Error())
	case errors.As(err, &qi):
		writeError(w, http.StatusBadRequest, qi.Error())
	case errors.As(err, &ci):
		writeError(w, http.StatusBadRequest, ci.Error())
	case r.Context().Err() != nil:
		// The caller left; nothing to answer.
	default:
		u.cfg.Logger.Error("web page request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error (logged by the sidecar)")
	}
}

// pageArgs reads after and limit.
func pageArgs(w http.ResponseWriter, r *http.Request) (after string, limit int, ok bool) {
	q := r.URL.Query()
	limit = defaultPage
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPage {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %q is not a number from 1 to %d", s, maxPage))
			return "", 0, false
		}
		limit = n
	}
	return q.Get("after"), limit, true
}

func (u *UI) session(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{"csrf": u.csrf, "actions": u.cfg.Actions, "actions_off": u.cfg.ActionsOff,
		"counts_ready": u.tally.Ready()})
}

// BatchSummary is one batch on the batches page.
type BatchSummary struct {
	Name   string           `json:"name"`
	Counts workqueue.Counts `json:"counts"`
	// PerSecond is tasks finished per second over the last minute;
	// ETASeconds the time left at that rate (0: unknown).
	PerSecond  float64 `json:"per_second"`
	ETASeconds float64 `json:"eta_seconds"`
}

func (u *UI) summary(name string, c workqueue.Counts) BatchSummary {
	rate, eta := u.rates.rate(name, c.Total-c.Finished())
	return BatchSummary{Name: name, Counts: c, PerSecond: rate, ETASeconds: eta}
}

// batches lists batches by name, a page at a time, from the tally.
func (u *UI) batches(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := pageArgs(w, r)
	if !ok {
		return
	}
	all := u.tally.Batches()
	names := make([]string, 0, len(all))
	for n := range all {
		if n > after {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	next := ""
	if len(names) > limit {
		names = names[:limit]
		next = names[limit-1]
	}
	out := make([]BatchSummary, 0, len(names))
	for _, n := range names {
		out = append(out, u.summary(n, all[n]))
	}
	writeJSON(w, map[string]any{"ready": u.tally.Ready(), "total": len(all), "batches": out, "next": next})
}

// batch shows one batch: counts, rate, pinned config and a page of tasks.
func (u *UI) batch(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := pageArgs(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	name := q.Get("name")
	state := workqueue.State(strings.ToUpper(q.Get("state")))
	switch state {
	case "", workqueue.StatePending, workqueue.StateClaimed, workqueue.StateFailed, workqueue.StateDone, workqueue.StateDead, workqueue.StateCancelled:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("state: %q is not PENDING, CLAIMED, FAILED, DONE, DEAD or CANCELLED", q.Get("state")))
		return
	}
	page, err := u.cfg.Queue.BatchPage(r.Context(), name, after, state, limit, 0)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	pin, err := u.cfg.Queue.GetPin(r.Context(), name)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	c, _ := u.tally.Batch(name)
	writeJSON(w, map[string]any{"batch": u.summary(name, c), "ready": u.tally.Ready(), "pin": pin, "page": page})
}

// task shows one task and its history.
func (u *UI) task(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	t, err := u.cfg.Queue.Get(r.Context(), id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	hist, partial, err := u.cfg.Queue.TaskHistory(r.Context(), id, 50)
	if err != nil && !errors.Is(err, workqueue.ErrNotFound) {
		u.fail(w, r, err)
		return
	}
	writeJSON(w, map[string]any{"task": t, "history": hist, "history_partial": partial})
}

// QueueSummary is one queue on the queues page.
type QueueSummary struct {
	Queue  string           `json:"queue"`
	Counts workqueue.Counts `json:"counts"`
	Paused bool             `json:"paused"`
	// PausedMS is when it was paused (Unix ms).
	PausedMS int64 `json:"paused_ms,omitempty"`
	// OldestPendingMS is when its oldest ready task was submitted.
	OldestPendingMS int64 `json:"oldest_pending_ms,omitempty"`
}

func (u *UI) queues(w http.ResponseWriter, r *http.Request) {
	counts := u.tally.Queues()
	paused, err := u.cfg.Queue.Paused(r.Context())
	if err != nil {
		u.fail(w, r, err)
		return
	}
	names := make([]string, 0, len(counts)+len(paused))
	for q := range counts {
		names = append(names, q)
	}
	for q := range paused {
		if _, ok := counts[q]; !ok {
			names = append(names, q)
		}
	}
	sort.Strings(names)
	out := make([]QueueSummary, 0, len(names))
	for _, q := range names {
		s := QueueSummary{Queue: q, Counts: counts[q]}
		if t, ok := paused[q]; ok {
			s.Paused, s.PausedMS = true, t.UnixMilli()
		}
		if s.Counts.Pending > 0 {
			if s.OldestPendingMS, err = u.cfg.Queue.OldestPending(r.Context(), q, 0); err != nil {
				u.fail(w, r, err)
				return
			}
		}
		out = append(out, s)
	}
	writeJSON(w, map[string]any{"ready": u.tally.Ready(), "queues": out})
}

func (u *UI) workers(w http.ResponseWriter, r *http.Request) {
	ws, err := registry.List(r.Context(), u.cfg.KV)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if ws == nil {
		ws = []registry.Entry{}
	}
	writeJSON(w, map[string]any{"workers": ws})
}

func (u *UI) locks(w http.ResponseWriter, r *http.Request) {
	ls, err := namedlock.ListLocks(r.Context(), u.cfg.KV)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	writeJSON(w, map[string]any{"locks": ls})
}

// config lists the documents, or with ?name= shows one: its kept versions
// (newest first) and its schema.
func (u *UI) config(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		names, err := u.cfg.Configs.Names(r.Context())
		if err != nil {
			u.fail(w, r, err)
			return
		}
		writeJSON(w, map[string]any{"names": names})
		return
	}
	hist, err := u.cfg.Configs.History(r.Context(), name)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	schema, err := u.cfg.Configs.Schema(r.Context(), name)
	if err != nil && !errors.Is(err, configdoc.ErrNotFound) {
		u.fail(w, r, err)
		return
	}
	type version struct {
		Revision int64           `json:"revision"`
		Document json.RawMessage `json:"document"`
	}
	vs := make([]version, 0, len(hist))
	for _, d := range hist {
		vs = append(vs, version{Revision: d.Revision, Document: d.Data})
	}
	writeJSON(w, map[string]any{"name": name, "versions": vs, "schema": schema})
}

func (u *UI) auditLog(w http.ResponseWriter, r *http.Request) {
	recs, more, skipped, err := audit.List(r.Context(), u.cfg.KV, defaultPage)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	slices.Reverse(recs) // newest first
	if recs == nil {
		recs = []audit.Record{}
	}
	writeJSON(w, map[string]any{"records": recs, "more": more, "skipped": skipped})
}

// store returns the work queue store whose actions are recorded as done
// through this page by r's caller.
func (u *UI) store(r *http.Request) (*workqueue.Store, error) {
	actor := u.cfg.Actor
	actor.Via = "web page from " + r.RemoteAddr
	aw, err := audit.NewWriter(u.cfg.KV, audit.WriterConfig{Actor: actor, Now: u.cfg.Clock.Now})
	if err != nil {
		return nil, err
	}
	return u.cfg.Queue.WithAudit(aw), nil
}

// taskAction is POST /ui/api/tasks/{id}/retry|cancel.
func (u *UI) taskAction(w http.ResponseWriter, r *http.Request) {
	id, act := r.PathValue("id"), r.PathValue("action")
	if act != "retry" && act != "cancel" {
		writeError(w, http.StatusNotFound, fmt.Sprintf("action: %q is not retry or cancel", act))
		return
	}
	s, err := u.store(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	var msg string
	if act == "retry" {
		changed, err := s.Retry(r.Context(), id)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		msg = "task " + id + " is PENDING already"
		if changed {
			msg = "task " + id + " is PENDING again with fresh attempts"
		}
	} else {
		res, err := s.Cancel(r.Context(), id)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		msg = "task " + id + " cancelled"
		if res.Requested {
			msg = "task " + id + " is claimed; its worker was asked to stop"
		}
	}
	u.cfg.Logger.Info("operator action from the web page", "action", act, "task", id, "remote", r.RemoteAddr)
	writeJSON(w, map[string]any{"ok": true, "message": msg})
}

// queueAction is POST /ui/api/queues/{queue}/pause|resume.
func (u *UI) queueAction(w http.ResponseWriter, r *http.Request) {
	q, act := r.PathValue("queue"), r.PathValue("action")
	if act != "pause" && act != "resume" {
		writeError(w, http.StatusNotFound, fmt.Sprintf("action: %q is not pause or resume", act))
		return
	}
	s, err := u.store(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	var changed bool
	if act == "pause" {
		changed, err = s.Pause(r.Context(), q)
	} else {
		changed, err = s.Resume(r.Context(), q)
	}
	if err != nil {
		u.fail(w, r, err)
		return
	}
	msg := fmt.Sprintf("queue %s: nothing to do (already %s)", q, map[string]string{"pause": "paused", "resume": "not paused"}[act])
	if changed {
		msg = fmt.Sprintf("queue %s %sd", q, act)
	}
	u.cfg.Logger.Info("operator action from the web page", "action", act, "queue", q, "remote", r.RemoteAddr)
	writeJSON(w, map[string]any{"ok": true, "message": msg})
}

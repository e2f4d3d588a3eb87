// Package ui is the operator's web page, served by the sidecar's admin
// server at /ui/ (baton sidecar --ui; on in baton dev): batches with their
// progress, throughput and ETA; a batch's tasks by state; one task's
// history; queues; workers; locks; config documents with their history;
// the audit log; and the operator's actions (retry a DEAD task, cancel,
// pause and resume a queue).
//
// # What it reads
//
// Every read goes through the library packages that own the keys
// (workqueue, configdoc, registry, coord, audit). Costs per request:
//
//	batches list   O(page), from memory: workqueue.Tally's counters
//	batch          O(1) counters from memory + O(page) batch members
//	               (O(scan) when filtered by state, 20 pages at most)
//	task           O(versions) reads of the task's MVCC history (≤ 50)
//	queues         counters from memory + O(priority levels) head reads
//	               per queue + the pause keys
//	workers, locks O(sidecars), O(lock keys): the same reads as the CLI
//	config         O(documents); one document: its kept history (≤ 50)
//	audit          the newest 50 records
//
// The Tally reads every task's status once when the page starts (and again
// only when its watch ends: it fell behind a compaction, or failed), then
// follows state/ and task/ with one watch whose events carry the previous
// value (a task never claimed has no state: its spec's creation counts it).
//
// # Live updates
//
// Run owns one Tally and one watch per other prefix the page shows
// (q/pause/, workers/, locks/, lockowners/, config/, audit/). Changes mark
// topics ("batches", "batch:NAME", "task:ID", "queues", "workers",
// "locks", "config:NAME", "audit") dirty; every FlushInterval the dirty set
// is sent to each subscriber of /ui/api/events (server-sent events) as one
// JSON array, and the page re-reads what it shows when a topic of its view
// is in it. A subscriber that cannot keep up loses messages and is sent
// "*" (re-read everything) once it can; more than 200 dirty topics are
// sent as "*" too. At most MaxSubscribers pages follow at once (503
// beyond). Stopping Run closes every subscriber's stream.
//
// # Security
//
// Everything the page needs is embedded (go:embed): no build step, nothing
// fetched from the internet. Data is shown with textContent only (task
// payloads and errors come from anyone who can submit), and a strict
// Content-Security-Policy forbids inline script. With an admin token,
// every /ui/api/ call needs "Authorization: Bearer TOKEN" or the session
// cookie that POST /ui/api/login sets after checking the token. Actions
// need Config.Actions (off by default on a non-loopback admin address),
// POST with a JSON body, the page's CSRF token in X-Baton-CSRF, and a
// same-origin request (net/http's CrossOriginProtection: Sec-Fetch-Site and
// Origin). Each action is the same workqueue call as the CLI's, and writes
// its audit record in the action's own transaction, naming the sidecar's
// process and, in Via, the caller's address.
package ui

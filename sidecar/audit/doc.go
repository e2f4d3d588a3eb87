// Package audit records what operators do to a deployment: cancelling and
// retrying tasks, pausing and resuming queues, setting configuration
// documents. The baton CLI does these directly on etcd (no sidecar sees
// them), so the record is written by the CLI, in etcd, in the same
// transaction as the action: an action without its record cannot happen,
// and an action that did not happen (its compare failed, it changed
// nothing) leaves no record.
//
// # Keys
//
// Relative to the deployment's namespace (so the sidecar's etcd role,
// read-write on the namespace's prefix, covers them):
//
//	audit/<unix ns, 19 digits>-<8 hex>  one record, JSON (Record)
//	auditcursor                         the revision up to which the scheduler logged records
//
// A record is small (the action, its object, who: OS uid and user name,
// host, pid, etcd user; each text field clipped to 256 bytes, so at most
// about 1.5 KiB) and its key sorts by the writer's clock, so the oldest
// records come first.
//
// # Retention
//
// The writer bounds the records: in the transaction that adds one, it
// deletes those older than WriterConfig.MaxAge (default 90 days) and the
// oldest past WriterConfig.Keep (default 10,000). Retention needs no
// sidecar, and costs the fleet nothing: it rides on the operator's rare
// writes (one count request, and a keys-only read when there are too
// many).
//
// # Logging
//
// The elected scheduler sidecar runs a Follower for its term: it logs every
// record as it arrives ("operator action", with its fields) and counts it
// (baton_operator_actions_total{action}). It keeps its place in
// auditcursor, so that records written while no scheduler ran (failover,
// or no sidecar at all) are logged by the next one; a record can be logged
// twice when a scheduler dies between logging it and moving the cursor.
//
// # Trust
//
// Who did it is what the writing client says: its OS user and process,
// and the etcd user it logged in as. etcd does not tell watchers who wrote
// a key, so a modified client, or anyone with write access to the
// namespace, can write or delete records. The log holds operators who use
// the baton CLI to account; it is not proof against one with etcd write
// access (docs/security.md).
package audit

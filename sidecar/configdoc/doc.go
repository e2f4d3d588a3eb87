// Package configdoc keeps named JSON configuration documents in etcd: the
// settings every inference worker of a fleet must agree on, such as
// {"sample_rate": 24000, "seed": 42, "output_dir": "/out", "use_kv_cache": true}.
//
// # Keys
//
// Relative to the deployment's namespace:
//
//	config/<name>                 the current document (a JSON object)
//	confighist/<name>/<revision>  an earlier version, keyed by the revision it had
//	configschema/<name>           an optional JSON Schema every new version must meet
//
// A document's revision is the mod revision of config/<name>: it rises with
// every change and says which of two versions is newer. etcd keeps a key's
// mod revision through compaction, so the revision of the current version
// stays meaningful after history is compacted away. Earlier versions are kept
// under confighist/ (the last Config.Keep of them) because etcd's own
// history is removed by compaction.
//
// # Writing
//
// Set is compare-and-swap: it reads the current version and the schema,
// validates, and writes the new version and the history entry of the old one
// in one transaction that compares both mod revisions, retrying when another
// writer came first. Setting a document equal to the current one changes
// nothing and creates no revision.
//
// # Watching
//
// Watch delivers whole documents, never diffs, in revision order, and never
// a revision at or below one it delivered (or the caller's after revision).
// It first reads the current version, then follows etcd's watch from the
// revision of that read. When the watch fails (the revision was compacted,
// the member lost its leader, etcd restarted) it reads the current version
// again and goes on from there, so a watcher may skip intermediate versions
// it could no longer get, but always ends on the latest and never goes
// backwards. A client that reconnects passes the last revision it saw as
// after_revision and gets the current version at once if it is newer.
//
// # Pinning
//
// `baton submit --pin-config NAME` copies the current version into the
// batch (see workqueue.Pin), so the batch's tasks are handed out with that
// exact document even after the config changes and etcd compacts.
package configdoc

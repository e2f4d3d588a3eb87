// Package telemetry is where a Baton process's traces, metrics, health
// endpoints and trace-aware logs are built. It is wired in one place (the
// sidecar's Run and the command line) and passed into the packages that
// report: no global registry, no global tracer provider, no global
// propagator is set by library code.
//
// # Traces
//
// NewTracerProvider builds a tracer provider from the standard OTEL_*
// variables (an OTLP exporter over gRPC or HTTP/protobuf, the sampler of
// OTEL_TRACES_SAMPLER, the resource of OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES); without them it returns a no-op provider that
// records, exports and logs nothing. Its sampler is Quiet: idle long
// polls, session streams and health checks of callers that are not tracing
// start no trace.
//
// A task's trace runs through several processes:
//
//	baton.submit            baton CLI (root; its context is stored with each task)
//	└ baton.claim           sidecar: the claim transaction, conflicts as events;
//	  │                     Next hands this span's traceparent to the worker
//	  └ baton.task <queue>  Python worker (baton_client), with the worker's own
//	    │                   spans inside (tts.synthesize in the example worker)
//	    ├ baton.v1.TaskService/Heartbeat   sidecar, per socket call (otelconnect)
//	    └ baton.v1.TaskService/Complete    sidecar
//	      └ baton.complete                 sidecar: the answer transaction
//
// Requeues (session closed, timeout, lease expiry, shutdown) are
// baton.requeue spans in the same trace; the workqueue package starts the
// claim, answer and requeue spans, the namedlock package the lock waits'
// (baton.lock.wait). This package provides the span of the configuration
// service: StartConfigDelivery (baton.config.deliver). Task ids, queues
// and attempts are span attributes; payloads never are.
//
// # Metrics
//
// NewMetrics returns one sidecar's Prometheus metrics on its own registry:
// it implements workqueue.Observer (claims, conflicts, answers, requeues,
// dispatch latency, run time, sampled queue depth), measures the etcd
// client through EtcdDialOptions (round-trip time, lease keepalive
// failures and age), reads live counts through Watch (claims held, worker
// sessions, leases lost) and implements namedlock.Observer (lock waits).
// Names follow baton_<subsystem>_<name>_<unit>; labels are bounded (queue names,
// fixed reason and outcome sets, etcd method names): never a task id, a
// lock name or a worker id. docs/observability.md lists every metric.
//
// # Health and logs
//
// Admin serves /metrics, /healthz and /readyz on the sidecar's admin
// address, with Start/Stop. LogHandler wraps a slog.Handler so that lines
// logged with a context that carries a span get trace_id and span_id.
package telemetry

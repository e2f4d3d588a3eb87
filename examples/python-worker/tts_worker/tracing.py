"""Optional OpenTelemetry for the worker process.

baton_client continues each task's trace when the opentelemetry API is
importable, but spans only leave the process when a tracer provider with an
exporter is installed. setup() installs one when the standard OTEL_*
variables ask for traces (as the Go sidecar reads them: OTEL_TRACES_EXPORTER
"otlp", or unset with OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set; OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none turn it off) and opentelemetry-sdk with the OTLP
exporter of OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (grpc, or http/protobuf by
default) is installed. Nothing here is needed to run the worker.
"""

import contextlib
import importlib
import logging
import os
from typing import Any, Callable, Iterator, Optional

log = logging.getLogger("tts_worker")

_EXPORTERS = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}


def wanted() -> bool:
    """Whether the OTEL_* variables ask for traces."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if exporter:
        return exporter == "otlp"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(service_name: str = "tts-worker") -> Optional[Callable[[], None]]:
    """Install a tracer provider exporting over OTLP when wanted() and the
    packages are there; return the function that flushes and stops it, or
    None when nothing was installed (the reason is logged)."""
    if not wanted():
        return None
    env = os.environ
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol not in _EXPORTERS:
        log.warning("tracing off: OTEL_EXPORTER_OTLP_PROTOCOL %r is not grpc or http/protobuf", protocol)
        return None
    try:
        trace: Any = importlib.import_module("opentelemetry.trace")
        sdk_trace: Any = importlib.import_module("opentelemetry.sdk.trace")
        export: Any = importlib.import_module("opentelemetry.sdk.trace.export")
        resources: Any = importlib.import_module("opentelemetry.sdk.resources")
        exporter_mod: Any = importlib.import_module(_EXPORTERS[protocol])
    except ImportError as e:
        log.warning("tracing off: %s (pip install opentelemetry-sdk and the OTLP exporter for %s)", e, protocol)
        return None
    attrs = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attrs["service.name"] = service_name
    # The endpoint, headers, timeout and sampler come from the OTEL_*
    # variables, read by the SDK and the exporter themselves.
    provider = sdk_trace.TracerProvider(resource=resources.Resource.create(attrs))
    provider.add_span_processor(export.BatchSpanProcessor(exporter_mod.OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing on: OTLP over %s", protocol)

    def shutdown() -> None:
        provider.shutdown()

    return shutdown


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span of the current trace (the task's, inside ``with task:``), or
    nothing without OpenTelemetry."""
    try:
        trace: Any = importlib.import_module("opentelemetry.trace")
    except ImportError:
        yield
        return
    with trace.get_tracer("tts_worker").start_as_current_span(name, attributes=attributes):
        yield

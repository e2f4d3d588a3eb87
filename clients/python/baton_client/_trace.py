"""Optional OpenTelemetry: continue a task's traceparent when the
opentelemetry API is importable; do nothing otherwise."""

import contextlib
from typing import Any, Dict, Iterator, Optional


_UNSET: Any = object()
_found: Any = _UNSET


def _otel() -> Any:
    """(trace module, propagator class), or None without OpenTelemetry;
    looked up once per process (every call asks)."""
    global _found
    if _found is _UNSET:
        try:
            from opentelemetry import trace  # noqa: F401  (optional dependency)
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            _found = (trace, TraceContextTextMapPropagator)
        except ImportError:
            _found = None
    return _found


@contextlib.contextmanager
def task_span(name: str, traceparent: str, attributes: Dict[str, Any]) -> Iterator[Optional[Any]]:
    """A span named name, child of traceparent, when OpenTelemetry is
    importable; otherwise yields None."""
    ot = _otel()
    if ot is None:
        yield None
        return
    trace, prop = ot
    ctx = prop().extract({"traceparent": traceparent}) if traceparent else None
    tracer = trace.get_tracer("baton_client")
    with tracer.start_as_current_span(name, context=ctx, attributes=attributes) as span:
        yield span


def current_traceparent() -> str:
    """The traceparent of the current span, or "" without OpenTelemetry."""
    ot = _otel()
    if ot is None:
        return ""
    _, prop = ot
    carrier: Dict[str, str] = {}
    prop().inject(carrier)
    return carrier.get("traceparent", "")

"""Exceptions raised by baton_client, one class per Connect error code."""

from typing import Dict, Optional, Type


class BatonError(Exception):
    """An error answered by the sidecar, or a failure to reach it.

    ``code`` is the Connect error code (``"failed_precondition"``, ...) and
    ``message`` the sidecar's message.
    """

    code = "unknown"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message)


class Canceled(BatonError):
    code = "canceled"


class Unknown(BatonError):
    code = "unknown"


class InvalidArgument(BatonError):
    """Bad input; the message names the field."""

    code = "invalid_argument"


class DeadlineExceeded(BatonError):
    code = "deadline_exceeded"


class NotFound(BatonError):
    code = "not_found"


class AlreadyExists(BatonError):
    code = "already_exists"


class PermissionDenied(BatonError):
    code = "permission_denied"


class ResourceExhausted(BatonError):
    code = "resource_exhausted"


class FailedPrecondition(BatonError):
    code = "failed_precondition"


class ClaimLost(FailedPrecondition):
    """The claim is stale: the task was claimed again, returned to the queue
    or already finished. Discard this attempt's output."""


class SessionLost(FailedPrecondition):
    """The session (the Attach stream) is no longer open on the
    sidecar, e.g. because the sidecar restarted."""


class LockLost(FailedPrecondition):
    """Unlock found the lock no longer held by this session: it was lost
    with its lease (the sidecar was cut off from etcd for longer than its
    TTL), so another worker may have held it meanwhile. Writes made under
    the lock must be checked against their fencing token."""


class IncompatibleSidecar(BatonError):
    """The sidecar speaks another version of the socket API than this
    client; the message says which side to upgrade."""

    code = "failed_precondition"


class Aborted(BatonError):
    code = "aborted"


class OutOfRange(BatonError):
    code = "out_of_range"


class Unimplemented(BatonError):
    code = "unimplemented"


class Internal(BatonError):
    code = "internal"


class Unavailable(BatonError):
    """The sidecar or etcd cannot answer now; retrying later may work."""

    code = "unavailable"


class SidecarNotFound(Unavailable):
    """Nothing listens on the socket (after retrying for ``connect_timeout``)."""


class DataLoss(BatonError):
    code = "data_loss"


class Unauthenticated(BatonError):
    code = "unauthenticated"


class TaskCancelled(Exception):
    """Raised by Task.checkpoint() when an operator asked to cancel the
    task (``baton tasks cancel``). Leaving ``with task:`` with it ends the
    task CANCELLED. Not a BatonError: it comes from the worker's own code.
    An ``except Exception:`` in the worker swallows it; re-raise it."""


class PermanentError(Exception):
    """Raise it (or a subclass) inside ``with task:`` for a failure that no
    retry can fix, such as a bad payload: the task is DEAD at once, with the
    message, instead of being retried max_attempts times. ``fail_on=`` on
    Client.tasks() does the same for exception types you do not own
    (``fail_on=(ValueError, KeyError)``)."""


_BY_CODE: Dict[str, Type[BatonError]] = {
    c.code: c
    for c in (
        Canceled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}

# HTTP status → code, for answers that carry no Connect error body
# (https://connectrpc.com/docs/protocol#http-to-error-code).
_BY_HTTP = {
    400: "internal",
    401: "unauthenticated",
    403: "permission_denied",
    404: "unimplemented",
    429: "unavailable",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


def error_for(code: str, message: str) -> BatonError:
    """Return the exception instance for a Connect error code."""
    cls = _BY_CODE.get(code, Unknown)
    return cls(message, code)

"""baton_client: the Python client of the Baton sidecar.

Standard library only; OpenTelemetry is used when importable. Importing the
package opens no socket and starts no thread.

    from baton_client import Client
    client = Client()                      # BATON_SOCKET
    for task in client.tasks("tts"):
        with task:                         # complete on success, fail on exception
            task.result = synthesize(task.payload)
"""

from ._version import VERSION as __version__  # one place: pyproject.toml reads it too
from .client import Client, SubmitResult, TaskSpec
from .config import ConfigDoc, ConfigWatch
from .errors import (
    Aborted,
    AlreadyExists,
    BatonError,
    Canceled,
    ClaimLost,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    IncompatibleSidecar,
    Internal,
    InvalidArgument,
    LockLost,
    NotFound,
    OutOfRange,
    PermanentError,
    PermissionDenied,
    ResourceExhausted,
    SessionLost,
    SidecarNotFound,
    TaskCancelled,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from .lock import Lock
from .task import Task

__all__ = [
    "Aborted",
    "AlreadyExists",
    "BatonError",
    "Canceled",
    "ClaimLost",
    "Client",
    "ConfigDoc",
    "ConfigWatch",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "IncompatibleSidecar",
    "Internal",
    "InvalidArgument",
    "Lock",
    "LockLost",
    "NotFound",
    "OutOfRange",
    "PermanentError",
    "PermissionDenied",
    "ResourceExhausted",
    "SessionLost",
    "SidecarNotFound",
    "SubmitResult",
    "Task",
    "TaskCancelled",
    "TaskSpec",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "__version__",
]


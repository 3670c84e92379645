"""What one job run in a child process comes back as, and how a failure is classified.

Every submitted job yields exactly one :class:`ChildOutcome`: success with the entry's JSON value, or
a failure carrying one of the ``constants.ERR_*`` classes. The rules (first match wins):

========================================  ===========================
what happened                             ``error_class``
========================================  ===========================
killed at the hard time limit             ``timeout``
the tree over its task limit, or a fork   ``process-limit``
refused at it (killed by the parent)
a write past the file-size limit          ``file-size-limit``
(``EFBIG`` in the chain, or ``SIGXFSZ``)
tree RSS over the cap (parent's kill),    ``out-of-memory``
a ``MemoryError`` in the cause chain
an ``ImportError`` in the cause chain     ``missing-dependency``
the exception has ``error_class``         that value (see :class:`JobFailure`)
an allocator failure message              ``out-of-memory``
"requires the X library" message          ``missing-dependency``
any other exception of the entry          ``forward-error``
death by a signal, exit without result,   ``crashed``
the fork server died, or ``cancel()``
========================================  ===========================
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Any

from accelerate_core.constants import (
    ERR_CRASHED,
    ERR_FILE_SIZE,
    ERR_FORWARD,
    ERR_MISSING_DEPENDENCY,
    ERR_OOM,
)

__all__ = ["ChildOutcome", "JobFailure", "classify_exception"]

_OOM_PATTERNS = re.compile(
    r"can't allocate memory|out of memory|Cannot allocate memory|std::bad_alloc|CUDA error: out of memory",
    re.IGNORECASE,
)
_MISSING_DEP_PATTERN = re.compile(r"requires the [\w.\- ]+ librar(y|ies)|No module named", re.IGNORECASE)


class JobFailure(Exception):
    """Raised by entry code to tag a failure with its error class (e.g. ``build-error``).

    It deliberately does not derive from :class:`~accelerate_core.errors.AccelerateError`: a job that
    fails is a *result* recorded with its class, not an error of the fleet itself. The runner reads
    ``error_class`` from any exception that carries one, so entry code may also set it on its own
    exception types.

    Args:
        error_class: one of ``constants.ERROR_CLASSES`` (``build-error``, ``forward-error``, ...).
        message: one line saying what failed.
        error_type: the original exception class name, when this wraps another exception.
    """

    def __init__(self, error_class: str, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.error_type = error_type


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """The outcome of one job: ``ok`` with ``value``, or a classified failure.

    Attributes:
        job_id: the id given to ``submit``.
        ok: True when the entry returned a value.
        value: the entry's JSON value (a dict) when ``ok``.
        error_class: one of ``constants.ERROR_CLASSES`` when not ``ok``.
        error_type: the exception class name (``"ValueError"``), or ``"Timeout"``, ``"Signal"``, ...
        error_message: one line (the exception message, or what the runner saw).
        duration_s: wall time from fork to the end of the child.
        peak_rss_mb: the child's peak resident set size in MiB (kernel ``ru_maxrss`` and the parent's samples).
        exit_signal: the signal number that ended the child, if any.
        pid: the child's process id (its process group id too), if it was started.
        traceback: the formatted traceback of an exception raised in the child.
        log_tail: the last lines the child wrote on stdout/stderr (kept for failures only).
        entry_s: the entry function's own wall time in the child (the rest of ``duration_s`` is the fork,
            the box, the environment, the result write and the exit: the runner's fixed cost per job).
    """

    job_id: str
    ok: bool
    value: dict[str, Any] | None = None
    error_class: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    duration_s: float = 0.0
    peak_rss_mb: float | None = None
    exit_signal: int | None = None
    pid: int | None = None
    traceback: str | None = None
    log_tail: str | None = None
    entry_s: float | None = None

    @classmethod
    def failure(cls, job_id: str, error_class: str, error_type: str, message: str, **extra: Any) -> ChildOutcome:
        """A failed outcome."""
        return cls(job_id=job_id, ok=False, error_class=error_class, error_type=error_type,
                   error_message=message, **extra)  # fmt: skip

    @classmethod
    def crashed(cls, job_id: str, message: str, **extra: Any) -> ChildOutcome:
        """A ``crashed`` outcome (the child or the server died without a result)."""
        return cls.failure(job_id, ERR_CRASHED, "Crashed", message, **extra)


def classify_exception(exc: BaseException) -> str:
    """Return the error class of an exception raised by entry code (see the module table).

    A write past the job's file-size limit (``OSError(EFBIG)``), a ``MemoryError`` or an ``ImportError``
    anywhere in the cause chain wins over a tag (a build step that wraps an ImportError in
    ``JobFailure("build-error", ...)`` is still a missing dependency); then the ``error_class`` tag;
    then the messages (allocator failures, "requires the X library").
    """
    chain = _chain(exc)
    if any(isinstance(e, OSError) and e.errno == errno.EFBIG for e in chain):
        return ERR_FILE_SIZE
    if any(isinstance(e, MemoryError) for e in chain):
        return ERR_OOM
    if any(isinstance(e, ImportError) for e in chain):
        return ERR_MISSING_DEPENDENCY
    tagged = getattr(exc, "error_class", None)
    if isinstance(tagged, str) and tagged:
        return tagged
    if any(_OOM_PATTERNS.search(str(e)) for e in chain):
        return ERR_OOM
    if any(_MISSING_DEP_PATTERN.search(str(e)) for e in chain):
        return ERR_MISSING_DEPENDENCY
    return ERR_FORWARD


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, outermost first (cycle-safe)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen

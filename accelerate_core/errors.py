"""The one exception tree of accelerate-fleet.

Every error this project raises on purpose derives from :class:`AccelerateError`. Foreign errors
(duckdb, redis, jinja2, torch, tomllib) are translated at the adapter that meets them, always with
``raise ... from e``, so callers never catch a third-party class.

::

    AccelerateError                   root; str(e) is one line saying what was wrong and what to do
    ├── ConfigError                   a setting, TOML file or command-line value is invalid (exit 2)
    ├── HardwareError                 a hardware kind or device cannot be used
    │   └── HardwareUnavailableError  the requested kind/device is not present on this machine (exit 2)
    ├── ModelError                    a model cannot be found, built or loaded
    │   ├── UnknownModelError         the model type or checkpoint source does not exist (exit 2)
    │   └── ModelBuildError           the model exists but could not be built/loaded
    ├── TemplateError                 a test template is missing, broken or renders invalid code
    │   ├── TemplateNotFoundError     no template (or version) matches the lookup (exit 2)
    │   └── TemplateInvalidError      syntax error, undefined variable or invalid rendered Python
    ├── StoreError                    the results/templates DuckDB store failed
    │   ├── StoreMissingError         the DuckDB file to read does not exist: a path or a first step (exit 2)
    │   ├── StoreLockedError          another process holds the DuckDB file read-write
    │   ├── StoreWriteError           a write could not be made durable (disk full, I/O): try it again later
    │   └── UnknownRunError           no run with that id is in the store (exit 2)
    ├── RunnerError                   the job runner (fork server) itself failed, not a job
    ├── BrokerError                   the Celery broker (Redis) is unreachable or misbehaves
    │   └── LockLostError             the writer's lock expired and another writer holds it (fencing)
    ├── RunStalledError               a followed fleet run stopped progressing (no writer, no worker) (exit 1)
    └── ContractError                 a message or stored payload does not match its contract (wire.py)
        ├── VersionSkewError          it was written by an incompatible (other major) schema version
        └── SignatureError            it must carry the fleet key's signature and does not (signing.py)

A job that fails (timeout, out of memory, a forward pass that raises) is a *result*, recorded in the
store with its error class; it is not an exception of this tree.
"""

from __future__ import annotations


class AccelerateError(Exception):
    """Root of every error raised on purpose by accelerate-fleet."""

    #: Exit status a CLI uses when this error ends a command (2 = bad usage or configuration).
    exit_code: int = 1


class ConfigError(AccelerateError):
    """Raised when a setting (environment, TOML file or CLI option) is invalid."""

    exit_code = 2


class HardwareError(AccelerateError):
    """Raised when a hardware kind or device cannot be used."""


class HardwareUnavailableError(HardwareError):
    """Raised when the requested hardware kind or device index is not present here."""

    exit_code = 2


class ModelError(AccelerateError):
    """Raised when a model cannot be found, built or loaded."""


class UnknownModelError(ModelError):
    """Raised when a model type or checkpoint source does not exist."""

    exit_code = 2


class ModelBuildError(ModelError):
    """Raised when a known model could not be built or loaded."""


class TemplateError(AccelerateError):
    """Raised when a test template is missing, broken or renders invalid code."""


class TemplateNotFoundError(TemplateError):
    """Raised when no template (or no such version) matches a lookup."""

    exit_code = 2


class TemplateInvalidError(TemplateError):
    """Raised when a template has a syntax error, an undefined variable or renders invalid Python."""

    exit_code = 2


class StoreError(AccelerateError):
    """Raised when a DuckDB store (results or templates) fails."""


class StoreMissingError(StoreError):
    """Raised when a store to read does not exist: a wrong path in the settings, or no run made one yet."""

    exit_code = 2


class StoreLockedError(StoreError):
    """Raised when another process already holds the DuckDB file open read-write."""


class StoreWriteError(StoreError):
    """Raised when a write could not be made durable (a full disk, an I/O error); nothing of it was written."""


class UnknownRunError(StoreError):
    """Raised when no run with the given id exists in the store."""

    exit_code = 2


class RunnerError(AccelerateError):
    """Raised when the job runner (the fork server) itself fails, as opposed to a job."""


class BrokerError(AccelerateError):
    """Raised when the Celery broker (Redis) is unreachable or misbehaves."""


class LockLostError(BrokerError):
    """Raised when a writer finds another writer holding its lock: it must write nothing more."""


class RunStalledError(AccelerateError):
    """Raised when ``accel run --wait`` sees a fleet run stop progressing; the message says what to start.

    Exit status 1, like a failed job: the run did not complete (2 stays for bad usage or configuration).
    """


class ContractError(AccelerateError):
    """Raised when a message or stored payload does not decode to its contract (see ``accelerate_core.wire``)."""


class VersionSkewError(ContractError):
    """Raised when a payload's schema major version differs from this code's: both versions are named.

    Attributes:
        theirs: the payload's schema version (``"2.0"``), or ``"?"`` when it carries none that parses.
        ours: this code's schema version.
    """

    def __init__(self, message: str, *, theirs: str, ours: str) -> None:
        super().__init__(message)
        self.theirs = theirs
        self.ours = ours


class SignatureError(ContractError):
    """Raised when a message that must be signed with the fleet key is unsigned or its signature is wrong.

    Attributes:
        error_class: the row's error class: ``unsigned-job`` or ``bad-signature``.
    """

    def __init__(self, message: str, *, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class

"""Fleet signatures: a worker runs only jobs signed with the fleet key, which the broker never sees.

Anyone who can write to the broker can put a job message on a worker's queue, and a job carries the code
it runs (its template). So a job message is signed where it is made (the scheduler; the writer's
reconciler when it re-sends a lost job) and checked where it is run (the worker), and a run message
(``record_run``) is signed by the scheduler and checked by the writer, which re-sends only the jobs of runs
it recorded; the results sent to the writer (``record_result``: workers, the scheduler's ``skipped`` rows, the
reconciler's ``lost`` rows), ``accel cancel``'s ``cancel_run`` and the nodes' ``register_worker`` (their
inventory: hardware, device, versions) are signed too, and the writer applies only signed ones: HMAC-SHA256,
keyed with the fleet key, over the :func:`accelerate_core.wire.canonical` bytes of the encoded job, with the
task's name in front so a signature made for one kind of message is never valid for another. The signature
travels beside the job in the message's keyword arguments (``{"spec": {...}, "sig": "<hex>"}``); the broker
carries it and cannot make one. A worker's result travels in a canonical body
(:func:`accelerate_core.celery_message.build`), so the writer checks its signature over the bytes as they came
(:meth:`FleetKey.signs`) instead of encoding the result again.

The key is 32 random bytes or more, given as hex in ``ACCEL_FLEET_KEY`` (``openssl rand -hex 32``), set
once where the broker password is (``deploy/accel.env``, the README's recipe) and held by the scheduler, the
workers and the writer only. Comparisons are constant-time (:func:`hmac.compare_digest`). Why HMAC and not Celery's
X.509 ``auth`` serializer: SECURITY.md, "Signed jobs".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from accelerate_core import wire
from accelerate_core.constants import ERR_BAD_SIGNATURE, ERR_UNSIGNED
from accelerate_core.errors import ConfigError, SignatureError

if TYPE_CHECKING:
    from accelerate_core.config import Settings

__all__ = ["KEY_ENV", "KEY_MIN_BYTES", "NO_KEY", "SIGNATURE_KWARG", "FleetKey", "key_problem", "require_key"]

KEY_MIN_BYTES: Final = 32
"""The shortest fleet key accepted, in bytes (64 hex digits)."""

KEY_ENV: Final = "ACCEL_FLEET_KEY"
"""The environment variable holding the fleet key (hex); processes that need no key drop it."""

SIGNATURE_KWARG: Final = "sig"
"""The keyword argument of a signed task message that holds its signature (hex HMAC-SHA256)."""

_SIGNATURE_HEX: Final = hashlib.sha256().digest_size * 2

NO_KEY: Final = (
    "no fleet key: set ACCEL_FLEET_KEY to the same secret on the scheduler and every worker "
    "(make one with `openssl rand -hex 32`; deploy/accel.env holds it), so workers run only the fleet's jobs"
)
"""The one line a fleet process that must sign or check jobs says when it has no key."""


def key_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a fleet key (None: usable). Never quotes the key."""
    value = text.strip()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return "is not hex: make a key with `openssl rand -hex 32`"
    if len(raw) < KEY_MIN_BYTES:
        return f"is {len(raw)} bytes: give at least {KEY_MIN_BYTES} (`openssl rand -hex 32`)"
    return None


@dataclass(frozen=True)
class FleetKey:
    """The fleet's shared secret: signs messages and checks their signatures. Never printed."""

    secret: bytes = field(repr=False)

    def sign(self, purpose: str, message: object) -> str:
        """The signature (hex) of ``message`` for ``purpose`` (a task name, e.g. ``accel.run_job``)."""
        return self._mac(purpose, wire.canonical(message))

    def signs(self, purpose: str, data: bytes, signature: str) -> bool:
        """Whether ``signature`` is this key's for the canonical bytes ``data`` of a message, as they were received
        (no encoding again: the bytes checked are the bytes the message is read from)."""
        return hmac.compare_digest(self._mac(purpose, data), signature.lower())

    def _mac(self, purpose: str, data: bytes) -> str:
        return hmac.new(self.secret, purpose.encode() + b"\n" + data, hashlib.sha256).hexdigest()

    def verify(self, purpose: str, message: object, signature: object) -> None:
        """Check that ``signature`` is this key's for ``message`` and ``purpose``.

        Raises:
            SignatureError: no signature (``unsigned-job``), or not this key's (``bad-signature``).
        """
        if signature is None:
            raise SignatureError(
                f"an unsigned {purpose} message: refused, nothing run or recorded (only holders of the fleet key "
                "send these; a sender that predates signing must be upgraded to one that signs with ACCEL_FLEET_KEY)",
                error_class=ERR_UNSIGNED,
            )
        if not isinstance(signature, str) or len(signature) != _SIGNATURE_HEX:
            raise _forged(purpose)
        try:
            expected = self.sign(purpose, message)
        except (TypeError, ValueError):
            raise _forged(purpose) from None
        if not hmac.compare_digest(expected, signature.lower()):
            raise _forged(purpose)

    def envelope(self, purpose: str, name: str, message: object) -> dict[str, Any]:
        """The keyword arguments of a signed task message: ``{name: message, "sig": signature}``."""
        return {name: message, SIGNATURE_KWARG: self.sign(purpose, message)}

    def open(self, purpose: str, name: str, kwargs: Mapping[str, Any]) -> object:
        """The message under ``name`` of a task's keyword arguments, once its signature is checked.

        Raises:
            SignatureError: unsigned, or not signed with this key (nothing of the message is trusted).
        """
        message = kwargs.get(name)
        self.verify(purpose, message, kwargs.get(SIGNATURE_KWARG))
        return message


def _forged(purpose: str) -> SignatureError:
    return SignatureError(
        f"a {purpose} message whose signature is not the fleet key's (forged, altered, or signed with another "
        "ACCEL_FLEET_KEY): refused, nothing run or recorded",
        error_class=ERR_BAD_SIGNATURE,
    )


def require_key(settings: Settings) -> FleetKey:
    """The fleet key of ``settings`` (checked when the settings were built).

    Raises:
        ConfigError: none is configured (:data:`NO_KEY`).
    """
    if not settings.fleet_key:
        raise ConfigError(NO_KEY)
    return FleetKey(bytes.fromhex(settings.fleet_key.strip()))

"""The fleet key of this test session: every fleet process a test starts gets it (``ACCEL_FLEET_KEY``)."""

from __future__ import annotations

import secrets
from typing import Final

from accelerate_core.signing import FleetKey

FLEET_KEY_HEX: Final = secrets.token_hex(32)
"""This session's fleet key, as ``ACCEL_FLEET_KEY`` holds it."""

FLEET_KEY: Final = FleetKey(bytes.fromhex(FLEET_KEY_HEX))
"""The same key, to sign or check messages in the test itself."""

"""Every error and warning code convstream emits, in one place (SPEC §3, §4, §5).

Errors reject an event (it becomes a dead letter); warnings ride along on a
conversion. Codes are plain strings so they can be written to JSON and used as
bounded metric labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- errors (SPEC §3) -------------------------------------------------------
MALFORMED_MESSAGE: Final = "malformed_message"
BATCH_TOO_LARGE: Final = "batch_too_large"
MISSING_FIELD: Final = "missing_field"
INVALID_TYPE: Final = "invalid_type"
INVALID_PIXEL_ID: Final = "invalid_pixel_id"
INVALID_ACTION_SOURCE: Final = "invalid_action_source"
EVENT_TIME_TOO_OLD: Final = "event_time_too_old"
EVENT_TIME_IN_FUTURE: Final = "event_time_in_future"
MISSING_EVENT_SOURCE_URL: Final = "missing_event_source_url"
MISSING_CLIENT_USER_AGENT: Final = "missing_client_user_agent"
MISSING_VALUE: Final = "missing_value"
MISSING_CURRENCY: Final = "missing_currency"
INVALID_VALUE: Final = "invalid_value"
INVALID_CURRENCY: Final = "invalid_currency"
INVALID_CONTENTS: Final = "invalid_contents"
INSUFFICIENT_CUSTOMER_INFORMATION: Final = "insufficient_customer_information"
UNKNOWN_PIXEL: Final = "unknown_pixel"
INVALID_AD: Final = "invalid_ad"  # an ads.catalog record that is not a valid ad (SPEC §9)

ERROR_CODES: Final = frozenset(
    {
        MALFORMED_MESSAGE,
        BATCH_TOO_LARGE,
        MISSING_FIELD,
        INVALID_TYPE,
        INVALID_PIXEL_ID,
        INVALID_ACTION_SOURCE,
        EVENT_TIME_TOO_OLD,
        EVENT_TIME_IN_FUTURE,
        MISSING_EVENT_SOURCE_URL,
        MISSING_CLIENT_USER_AGENT,
        MISSING_VALUE,
        MISSING_CURRENCY,
        INVALID_VALUE,
        INVALID_CURRENCY,
        INVALID_CONTENTS,
        INSUFFICIENT_CUSTOMER_INFORMATION,
        UNKNOWN_PIXEL,
        INVALID_AD,
    }
)

# --- warnings (SPEC §2, §5) --------------------------------------------------
CLIENT_CLOCK_SKEW: Final = "client_clock_skew"
EVENT_TIME_IN_MS: Final = "event_time_in_ms"
FBC_TIME_IN_SECONDS: Final = "fbc_time_in_seconds"
DROPPED_UNKNOWN_USER_DATA_KEY: Final = "dropped_unknown_user_data_key"


def dropped(key: str) -> str:
    """Warning for a user_data value that could not be normalized, e.g. ``dropped_em``."""
    return f"dropped_{key}"


@dataclass(frozen=True, slots=True)
class Error:
    """One reason an event is rejected. ``field`` is a dotted path, never a value."""

    code: str
    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "message": self.message}

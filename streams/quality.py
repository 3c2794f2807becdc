"""Match quality: a 0-10 score from which match keys a conversion carries (SPEC §7).

Weights are ours (Meta does not publish its Event Match Quality formula) and follow
Meta's guidance on which keys match best: fbc and em highest, then phone and stable
ids, then the browser pair, then the weak demographic keys. The sum is capped at 10 and
rounded half up to one decimal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

WEIGHTS: Final[Mapping[str, float]] = {
    "fbc": 3.0,
    "em": 3.0,
    "ph": 2.4,
    "external_id": 1.6,
    "madid": 1.6,
    "fb_login_id": 1.6,
    "lead_id": 1.6,
    "fbp": 1.2,
    "ctwa_clid": 1.2,
    "client_ip_address": 0.75,
    "client_user_agent": 0.75,
    "anon_id": 0.6,
    "fn": 0.5,
    "ln": 0.5,
    "db": 0.4,
    "subscription_id": 0.4,
    "ct": 0.2,
    "st": 0.2,
    "zp": 0.2,
    "country": 0.2,
    "page_id": 0.2,
    "ge": 0.1,
}
MAX_SCORE: Final = 10.0
# The weights in hundredths: sums are exact, so a score such as 1.55 (anon_id + ip +
# country) is rounded half up to 1.6 whatever the keys' order, not by float luck.
_HUNDREDTHS: Final[Mapping[str, int]] = {k: round(w * 100) for k, w in WEIGHTS.items()}
_MAX_HUNDREDTHS: Final = round(MAX_SCORE * 100)


def _score(present: tuple[str, ...]) -> tuple[float, tuple[str, ...]]:
    keys = sorted(k for k in present if k in WEIGHTS)
    hundredths = min(_MAX_HUNDREDTHS, sum(_HUNDREDTHS[k] for k in keys))
    return (hundredths + 5) // 10 / 10, tuple(keys)  # one decimal, half up


# Events come in a few shapes of user_data keys: the score of each shape is computed once.
# Keyed by key names only (no values); bounded by clearing when full.
_SCORES: Final[dict[tuple[str, ...], tuple[float, tuple[str, ...]]]] = {}
_SCORES_MAX: Final = 4096


def match_quality(user_data: Mapping[str, Any]) -> dict[str, Any]:
    present = tuple([k for k, v in user_data.items() if v])
    hit = _SCORES.get(present)
    if hit is None:
        if len(_SCORES) >= _SCORES_MAX:
            _SCORES.clear()
        hit = _SCORES[present] = _score(present)
    return {"score": hit[0], "keys": list(hit[1])}

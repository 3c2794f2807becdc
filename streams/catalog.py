"""The ads catalog (SPEC §9): ad id → the ad's resolved specs, fed from ``ads.catalog``.

``ads.catalog`` is a compacted topic keyed by ad id; a record replaces the ad, a
tombstone (null value) deletes it. Each ad is parsed and resolved once, when it
arrives, so matching a conversion is only the spec comparisons. A malformed ad is
rejected with the ``invalid_ad`` error naming the field (``SpecError`` path); the ad
it would have replaced is kept, so one bad update does not drop a working ad.
The worker and ``convstream process --catalog`` use this same class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from streams import specs
from streams.codes import INVALID_AD, Error


@dataclass(slots=True)
class Catalog:
    ads: dict[str, specs.ResolvedAd] = field(default_factory=dict)

    def get(self, ad_id: str) -> specs.ResolvedAd | None:
        return self.ads.get(ad_id)

    def __len__(self) -> int:
        return len(self.ads)

    def apply(self, key: bytes | None, value: bytes | None) -> Error | None:
        """Apply one ``ads.catalog`` record; return the error when it is rejected."""
        if value is None:
            if not key:
                return Error(INVALID_AD, None, "tombstone without a key (ad id)")
            self.ads.pop(key.decode("utf-8", "replace"), None)
            return None
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            return Error(INVALID_AD, None, "value is not JSON")
        try:
            resolved = specs.resolve_ad(specs.parse_ad(obj))
        except specs.SpecError as e:
            return Error(INVALID_AD, None if e.path == specs.ROOT else e.path, str(e))
        except Exception as e:  # a resolver bug must not stop the catalog reader
            return Error(INVALID_AD, None, f"ad could not be resolved ({type(e).__name__})")
        ad_id = resolved.ad.ad_id
        if key and key.decode("utf-8", "replace") != ad_id:
            return Error(INVALID_AD, "ad_id", "the record's key must be its ad_id")
        self.ads[ad_id] = resolved
        return None

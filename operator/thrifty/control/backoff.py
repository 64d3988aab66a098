"""Per-object exponential backoff for the periodic resync: a failing object costs little.

A ModelService whose pass keeps failing (the API server refuses its workloads, a Service range is
full, a webhook times out) would otherwise be retried on every resync, every one of them an API
round trip and a log line, and a thousand of them would keep the operator's threads and the API
server busy while healthy objects wait. After each consecutive failure the object sits out the
resyncs for twice as long as before (the first delay is the retry setting, the longest
`MAX_DELAY_SECONDS`), as kopf's own handler retries and error throttling do. A change to the
object reaches it at once anyway (a watch event is never held back), a success clears its record,
and the records of deleted objects go at the next pass: the table is bounded by the objects that
exist, not by how often they failed. Time is an input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_DELAY_SECONDS = 600.0
"""The longest an object sits out: kopf's error throttler stops growing at about 10 minutes."""


@dataclass
class Backoff:
    """Consecutive failures and the earliest next retry, by object uid."""

    first_delay_seconds: float
    max_delay_seconds: float = MAX_DELAY_SECONDS
    _records: dict[str, tuple[int, float]] = field(default_factory=dict)

    def due(self, uid: str, now: float) -> bool:
        """Whether a periodic pass should try `uid` at `now`."""
        record = self._records.get(uid)
        return record is None or now >= record[1]

    def failed(self, uid: str, now: float) -> float:
        """Records a failure at `now`; returns the delay before the next periodic try."""
        failures = self._records.get(uid, (0, now))[0] + 1
        growth: float = 2.0 ** min(failures - 1, 32)
        delay = min(self.first_delay_seconds * growth, self.max_delay_seconds)
        self._records[uid] = (failures, now + delay)
        return delay

    def succeeded(self, uid: str) -> None:
        self._records.pop(uid, None)

    def failures(self, uid: str) -> int:
        return self._records.get(uid, (0, 0.0))[0]

    def keep_only(self, live: Iterable[str]) -> None:
        """Forgets every uid not in `live` (deleted objects)."""
        keep = set(live)
        for uid in [uid for uid in self._records if uid not in keep]:
            del self._records[uid]

    def __len__(self) -> int:
        return len(self._records)

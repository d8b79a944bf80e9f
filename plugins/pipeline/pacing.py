"""How fast a batch may ask its CMS: a rate limit and the pauses the CMS asks for, shared by the batch's threads.

A batch with `max_concurrency` threads sends its creates side by side; the pacer makes them all keep one
rate (`max_requests_per_second`, the batch's share of the run's) and all stop together when the CMS asks
for a pause (429 / 503 with Retry-After, or our own default), instead of each thread finding out alone.
No Airflow import; the clock and the sleep are given, so tests run without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """`wait()` before each request: returns once the rate allows it and no pause is in force."""

    def __init__(self, per_second: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = 0.0  # the earliest moment the next request may start
        self._paused_until = 0.0

    def wait(self) -> None:
        with self._lock:  # each caller takes the next free moment, so the rate holds across threads
            now = self.clock()
            start = max(now, self._next, self._paused_until)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)

    def pause(self, seconds: float) -> float:
        """Nobody sends for `seconds` from now (a pause already longer stays). Returns the wait the caller owes."""
        with self._lock:
            now = self.clock()
            self._paused_until = max(self._paused_until, now + seconds)
            return self._paused_until - now

"""How fast a batch may ask its CMS: a rate limit and the pauses the CMS asks for, shared by the batch's threads.

A batch with `max_concurrency` threads sends its creates side by side; the pacer makes them all keep one
rate (`max_requests_per_second`, the batch's share of the run's) and all stop together when the CMS asks
for a pause (429 / 503 with Retry-After, or our own default), instead of each thread finding out alone.
It also backs off by itself when the CMS slows down before it refuses anything: the threads report how
long each create took, and while the median of the last few stays well above the fastest seen, creates are
spaced out: first to the rate the threads reached at the CMS's best, then half that per slow window until the
CMS recovers, and back up the same way. A CMS that answers no faster once the gap holds the threads below their
own pace is slow for reasons of its own (a bigger table, another client, a first few answers from a warm cache):
its pace now becomes its best and the gap goes, instead of doubling on to the ceiling while the CMS sits idle.
No Airflow import; the clock and the sleep are given, so tests run without waiting.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SLOW = 2.0  # the recent median this many times the fastest seen: the CMS is struggling
RECOVERED = 1.5  # back under this many times the fastest: it has recovered
DECIDE_EVERY = 10  # answers per median (and between two changes of the gap): one slow answer is not a trend
MAX_GAP = 5.0  # seconds: the widest spacing back-off reaches
NO_RELIEF = 0.75  # answers still above this share of the slow median that began back-off: spacing did not help


class Pacer:
    """`wait()` before each request: returns once the rate allows it and no pause is in force."""

    def __init__(self, per_second: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = 0.0  # the earliest moment the next request may start (the rate)
        self._next_slowed = 0.0  # the earliest moment the next create may start (back-off)
        self._paused_until = 0.0
        self.gap = 0.0  # back-off: the least time between two request starts while the CMS is slow
        # the batch's threads: back-off starts by holding the rate they reached at the CMS's best (one start
        # every fastest / threads seconds) and halves it per slow window from there
        self.threads = 1
        self._window: list[float] = []
        self._fastest = float("inf")
        self._slow_since: float | None = None  # the median that began the back-off in force

    def wait(self, *, back_off: bool = True) -> None:
        """Before a request. `back_off=False` (a password mail): only the rate and the pauses hold it. The
        gap spaces the creates, whose answers measure the CMS; a mail, light and never measured, is not held
        by it, so mails waiting for their turn never keep the gap from closing."""
        with self._lock:  # each caller takes the next free moment, so the rate holds across threads
            now = self.clock()
            start = max(now, self._next, self._paused_until, self._next_slowed if back_off else 0.0)
            self._next = start + self.interval
            if back_off:
                self._next_slowed = start + self.gap
        if start > now:
            self.sleep(start - now)

    def pause(self, seconds: float) -> float:
        """Nobody sends for `seconds` from now (a pause already longer stays). Returns the wait the caller owes."""
        with self._lock:
            now = self.clock()
            self._paused_until = max(self._paused_until, now + seconds)
            return self._paused_until - now

    def answered(self, seconds: float) -> None:
        """One create (or mail) took `seconds`: widen the gap while the CMS is slow, narrow it once it is not."""
        with self._lock:
            self._window.append(seconds)
            if len(self._window) < DECIDE_EVERY:
                return
            recent = statistics.median(self._window)
            self._window = []
            fastest = self._fastest = min(self._fastest, recent)
            before, slow_since, rebased = self.gap, self._slow_since, False
            if recent > SLOW * fastest:
                if slow_since is not None and self.gap > recent / self.threads and recent > NO_RELIEF * slow_since:
                    # the gap holds the threads below the pace they would keep, and the answers are no faster
                    self._fastest, self.gap, self._slow_since, rebased = recent, 0.0, None, True
                else:
                    self._slow_since = recent if slow_since is None else slow_since
                    self.gap = min(MAX_GAP, max(2 * self.gap, fastest / self.threads))
            elif recent <= RECOVERED * fastest:
                self.gap = self.gap / 2 if self.gap > fastest / (8 * self.threads) else 0.0
                if not self.gap:
                    self._slow_since = None
        if rebased:
            log.info("the CMS answers no faster when spaced out (%.0f ms a create, %.0f ms when it slowed): that "
                     "is its pace now, back-off ended", recent * 1000, slow_since * 1000)
        elif self.gap > before:
            log.info("the CMS is slowing down (%.0f ms a create, %.0f ms at best): at most one request every "
                     "%.0f ms for now", recent * 1000, fastest * 1000, self.gap * 1000)
        elif before and not self.gap:
            log.info("the CMS answers at its usual speed again (%.0f ms a create): back-off ended", recent * 1000)

"""The pacer's own back-off: requests are spaced out while the CMS answers slower than its best, and
the spacing goes away when it recovers; a steady CMS is never slowed down."""

from __future__ import annotations

import logging

from pipeline.pacing import DECIDE_EVERY, MAX_GAP, Pacer
from tests.pipeline.test_locks import Clock


def answers(pacer: Pacer, seconds: float, count: int) -> None:
    for _ in range(count):
        pacer.answered(seconds)


def test_a_steady_cms_is_never_held_back():
    clock = Clock()
    pacer = Pacer(clock=clock.time, sleep=clock.sleep)
    answers(pacer, 0.02, 500)
    pacer.wait(), pacer.wait()
    assert pacer.gap == 0 and clock.sleeps == []


def test_rising_latency_spaces_requests_out_and_recovery_ends_it(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.pacing")
    clock = Clock()
    pacer = Pacer(clock=clock.time, sleep=clock.sleep)
    answers(pacer, 0.02, 50)
    answers(pacer, 0.2, DECIDE_EVERY * 3)  # ten times slower: the average climbs past twice the best
    assert pacer.gap >= 0.02
    widened = pacer.gap
    answers(pacer, 0.2, DECIDE_EVERY * 2)
    assert pacer.gap > widened  # still slow: the gap keeps doubling
    pacer.wait()
    pacer.wait()  # the second request waits out the gap
    assert clock.sleeps and clock.sleeps[-1] >= pacer.gap * 0.99
    assert any("slowing down" in m for m in caplog.messages)
    answers(pacer, 0.02, DECIDE_EVERY * 30)  # back to its best
    assert pacer.gap == 0
    assert any("back-off ended" in m for m in caplog.messages)


def test_one_slow_answer_is_not_a_trend_and_the_gap_has_a_ceiling():
    pacer = Pacer(clock=lambda: 0.0, sleep=lambda s: None)
    answers(pacer, 0.02, 49)
    pacer.answered(2.0)  # one outlier, then normal answers
    answers(pacer, 0.02, DECIDE_EVERY * 5)
    assert pacer.gap == 0
    answers(pacer, 60.0, DECIDE_EVERY * 40)
    assert pacer.gap == MAX_GAP


def test_the_rate_limit_still_holds_when_the_gap_is_smaller():
    clock = Clock()
    pacer = Pacer(2, clock=clock.time, sleep=clock.sleep)  # one request every 0.5 s
    answers(pacer, 0.02, 20)
    answers(pacer, 0.1, DECIDE_EVERY * 2)
    assert 0 < pacer.gap < 0.5
    pacer.wait(), pacer.wait()
    assert clock.sleeps == [0.5]

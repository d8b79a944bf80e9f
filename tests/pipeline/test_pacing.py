"""The pacer's own back-off: requests are spaced out while the CMS answers slower than its best, and
the spacing goes away when it recovers; a steady CMS is never slowed down."""

from __future__ import annotations

import logging

import pytest

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


def test_mails_are_held_by_the_rate_and_pauses_but_not_by_the_gap():
    clock = Clock()
    pacer = Pacer(clock=clock.time, sleep=clock.sleep)
    answers(pacer, 0.02, 20)
    answers(pacer, 0.2, DECIDE_EVERY * 3)
    assert pacer.gap > 0
    pacer.wait()  # a create: the next create waits out the gap, a mail does not
    pacer.wait(back_off=False), pacer.wait(back_off=False)
    assert clock.sleeps == []
    pacer.wait()
    assert clock.sleeps == [pytest.approx(pacer.gap)]

    limited = Pacer(2, clock=clock.time, sleep=clock.sleep)  # the rate holds mails and creates alike
    limited.wait(), limited.wait(back_off=False)
    assert clock.sleeps[-1] == pytest.approx(0.5)
    paused = Pacer(clock=clock.time, sleep=clock.sleep)
    clock.sleeps.clear()
    paused.pause(3.0)
    paused.wait(back_off=False)
    assert clock.sleeps == [pytest.approx(3.0)]


def test_with_threads_back_off_first_holds_the_rate_they_reached_at_best():
    pacer = Pacer(clock=lambda: 0.0, sleep=lambda s: None)
    pacer.threads = 8
    answers(pacer, 0.02, 20)
    answers(pacer, 0.2, DECIDE_EVERY)
    assert pacer.gap == pytest.approx(0.02 / 8)  # 8 creates in flight at 20 ms: one start every 2.5 ms
    answers(pacer, 0.2, DECIDE_EVERY)
    assert pacer.gap == pytest.approx(0.02 / 4)  # still slow: half that rate
    answers(pacer, 0.02, DECIDE_EVERY * 10)
    assert pacer.gap == 0


def test_a_cms_no_faster_when_spaced_out_is_not_held_back_its_pace_becomes_its_best(caplog):
    # seen on a real Drupal 7: 26 ms a create at first, 53 ms from then on, one thread; the gap doubled to
    # 422 ms and the last 170 creates crawled at two a second while the site sat idle
    caplog.set_level(logging.INFO, logger="pipeline.pacing")
    pacer = Pacer(clock=lambda: 0.0, sleep=lambda s: None)
    answers(pacer, 0.026, 20)
    gaps = []
    for _ in range(6):
        answers(pacer, 0.053, DECIDE_EVERY)
        gaps.append(round(pacer.gap, 3))
    # 26 and 52 ms do not hold one thread at 53 ms a create; 104 ms does, and the answers stayed at 53 ms
    assert gaps == [0.026, 0.052, 0.104, 0.0, 0.0, 0.0]
    assert any("answers no faster when spaced out" in m for m in caplog.messages)
    answers(pacer, 0.2, DECIDE_EVERY)  # slowing down from that new pace backs off again
    assert pacer.gap == pytest.approx(0.053)


def test_a_cms_whose_answers_ease_when_spaced_out_stays_held_back():
    pacer = Pacer(clock=lambda: 0.0, sleep=lambda s: None)
    answers(pacer, 0.02, 20)
    answers(pacer, 0.2, DECIDE_EVERY * 5)  # 20, 40, 80, 160, 320 ms: the last holds the thread below 200 ms
    assert pacer.gap == pytest.approx(0.32)
    answers(pacer, 0.1, DECIDE_EVERY)  # half as slow under that gap: the spacing helps, and it is still slow
    assert pacer.gap == pytest.approx(0.64)

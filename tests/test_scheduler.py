"""The per-account scheduler: exclusive accounts, arrival order, no overtaking."""

from __future__ import annotations

import threading
import time

from worker.dispatch.scheduler import AccountScheduler


def test_jobs_sharing_an_account_wait_for_each_other() -> None:
    """A job whose account is held is not handed out until that job is done."""
    scheduler: AccountScheduler[str] = AccountScheduler()
    scheduler.put("a", {1, 2})
    scheduler.put("b", {2, 3})
    first = scheduler.take(timeout=0)
    assert first is not None
    assert first.job == "a"
    assert scheduler.take(timeout=0.05) is None
    scheduler.done(first)
    second = scheduler.take(timeout=0)
    assert second is not None
    assert second.job == "b"


def test_disjoint_jobs_run_in_parallel() -> None:
    """Jobs on different accounts are handed out at the same time."""
    scheduler: AccountScheduler[str] = AccountScheduler()
    for job, keys in (("a", {1, 2}), ("b", {3, 4}), ("c", {5, 6})):
        scheduler.put(job, keys)
    taken = [scheduler.take(timeout=0) for _ in range(3)]
    assert [s.job for s in taken if s is not None] == ["a", "b", "c"]
    assert scheduler.size == 3


def test_later_job_does_not_overtake_a_waiting_one_on_a_shared_account() -> None:
    """b waits for account 2; c (accounts 1, 9) would be free but must not pass b on 1...
    only b's accounts are reserved, so c on other accounts still runs."""
    scheduler: AccountScheduler[str] = AccountScheduler()
    scheduler.put("a", {2, 7})
    running = scheduler.take(timeout=0)
    scheduler.put("b", {1, 2})  # blocked by a on account 2
    scheduler.put("c", {1, 9})  # account 1 is free, but b waits for it first
    scheduler.put("d", {5, 6})  # unrelated: may run
    nxt = scheduler.take(timeout=0)
    assert nxt is not None
    assert nxt.job == "d"
    assert scheduler.take(timeout=0.05) is None
    assert running is not None
    scheduler.done(running)
    order = []
    for _ in range(2):
        slot = scheduler.take(timeout=0)
        assert slot is not None
        order.append(slot.job)
        scheduler.done(slot)
    assert order == ["b", "c"]


def test_drain_returns_unstarted_jobs_and_wait_idle_waits_for_running_ones() -> None:
    """Shutdown: drain hands back what has not started; wait_idle sees the rest finish."""
    scheduler: AccountScheduler[str] = AccountScheduler()
    scheduler.put("a", {1})
    scheduler.put("b", {1})
    scheduler.put("c", {2})
    running = scheduler.take(timeout=0)
    assert scheduler.drain() == ["b", "c"]
    assert not scheduler.wait_idle(0.05)
    assert running is not None
    threading.Timer(0.1, scheduler.done, args=(running,)).start()
    started = time.monotonic()
    assert scheduler.wait_idle(5)
    assert time.monotonic() - started < 2


def test_take_blocks_until_a_job_arrives() -> None:
    """An idle executor wakes up as soon as a job is put."""
    scheduler: AccountScheduler[str] = AccountScheduler()
    threading.Timer(0.1, scheduler.put, args=("late", {1})).start()
    slot = scheduler.take(timeout=5)
    assert slot is not None
    assert slot.job == "late"

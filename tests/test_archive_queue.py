"""The archive batch's work queue (storage/batches.py) and the worker loop around it (flows/archive.py:drain),
without Prefect: each input claimed by one worker at a time, taken over from a dead one, finished once."""

from __future__ import annotations

import concurrent.futures
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flows.archive import HOLDER_TAG, BatchSource, await_batch, drain, run_over
from flows.retry import is_transient
from pipeline.core.errors import InputCorrupt
from pipeline.core.settings import Settings
from storage.batches import BatchQueue
from storage.registry import Registry

LEASE = timedelta(seconds=30)
NAMES = [f"ARC-{i:04d}.pdf" for i in range(6)]


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    if registry_url.startswith("sqlite:///"):
        Path(registry_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    reg = Registry(registry_url)
    yield reg
    reg.close()


def test_each_input_is_claimed_once_and_finished_once(registry: Registry) -> None:
    queue = BatchQueue(registry)
    assert queue.enqueue("b1", NAMES) == len(NAMES)
    assert queue.enqueue("b1", NAMES) == 0  # re-running the batch id resumes it
    claimed = [queue.claim("b1", f"w{i % 2}", LEASE) for i in range(len(NAMES))]
    assert sorted(claimed) == NAMES  # type: ignore[type-var]
    assert queue.claim("b1", "w0", LEASE) is None
    assert queue.finish("b1", NAMES[0], "w0", "processed", dossier_code="D-1")
    assert not queue.finish("b1", NAMES[0], "w0", "processed")  # once
    assert not queue.finish("b1", NAMES[1], "w0", "failed", reason="x")  # w1 holds it, not w0
    assert queue.finish("b1", NAMES[1], "w1", "failed", reason="input_empty: empty")
    assert [(i.input_name, i.outcome) for i in registry.batch_items("b1")] == [
        (NAMES[0], "processed"), (NAMES[1], "failed")
    ]
    progress = queue.progress("b1")
    assert (progress.total, progress.claimed, progress.done, progress.finished) == (6, 4, 2, False)


def test_a_dead_workers_input_is_taken_over_and_only_the_new_holder_finishes_it(registry: Registry) -> None:
    alive = {"dead": False, "slow": True, "other": True}
    queue = BatchQueue(registry, holder_alive=lambda h: alive.get(h))
    queue.enqueue("b2", NAMES[:2])
    assert queue.claim("b2", "dead", LEASE) == NAMES[0]
    assert queue.claim("b2", "slow", timedelta(seconds=-1)) == NAMES[1]  # a lease already past
    # the dead process's input at once, the lapsed lease's too; a live holder's never
    assert {queue.claim("b2", "other", LEASE), queue.claim("b2", "other", LEASE)} == set(NAMES[:2])
    assert queue.claim("b2", "other", LEASE) is None
    assert not queue.finish("b2", NAMES[1], "slow", "processed")  # the slow one lost it: nothing recorded
    assert queue.renew("b2", NAMES[:2], "slow", LEASE) == sorted(NAMES[:2])
    assert all(queue.finish("b2", n, "other", "processed") for n in NAMES[:2])
    assert len(registry.batch_items("b2")) == 2 and queue.progress("b2").finished


def test_an_input_that_kills_its_workers_is_recorded_failed_after_max_tries(registry: Registry) -> None:
    queue = BatchQueue(registry, holder_alive=lambda h: False, max_tries=2)
    queue.enqueue("b3", ["poison.pdf"])
    assert queue.claim("b3", "w1", LEASE) == "poison.pdf"
    assert queue.claim("b3", "w2", LEASE) == "poison.pdf"
    assert queue.claim("b3", "w3", LEASE) is None
    (item,) = registry.batch_items("b3")
    assert item.outcome == "failed" and item.reason and item.reason.startswith("worker_lost")


def test_workers_draining_one_batch_run_every_input_once_even_when_one_dies(registry: Registry) -> None:
    """Three loops on one queue; a fourth 'worker' claimed an input and died (its process is gone)."""
    queue = BatchQueue(registry, holder_alive=lambda h: h != "ghost")
    queue.enqueue("b4", NAMES)
    abandoned = queue.claim("b4", "ghost", LEASE)
    ran: Counter[str] = Counter()
    lock = threading.Lock()
    pool = concurrent.futures.ThreadPoolExecutor(6)

    def worker(holder: str) -> int:
        def run(name: str) -> str:
            with lock:
                ran[name] += 1
            queue.finish("b4", name, holder, "processed")
            return name

        return drain(queue, "b4", holder, lambda n: pool.submit(run, n), lambda n: None, slots=2,
                     lease_for=LEASE, poll=0.05)

    with concurrent.futures.ThreadPoolExecutor(3) as loops:
        counts = list(loops.map(worker, ["w1", "w2", "w3"]))
    pool.shutdown()
    assert sum(counts) == len(NAMES) and set(ran) == set(NAMES) and set(ran.values()) == {1}
    assert abandoned in ran
    items = registry.batch_items("b4")
    assert sorted(i.input_name for i in items) == NAMES


def test_a_run_that_ends_without_recording_is_settled_by_the_loop(registry: Registry) -> None:
    queue = BatchQueue(registry)
    queue.enqueue("b5", NAMES[:1])
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def settle(name: str) -> None:  # what the flow does for a task that crashed or ran out of retries
        queue.finish("b5", name, "w", "failed", reason="storage_failed: S3 unreachable (after 4 tries)")

    assert drain(queue, "b5", "w", lambda n: pool.submit(lambda: None), settle, lease_for=LEASE, poll=0.05) == 1
    (item,) = registry.batch_items("b5")
    assert item.outcome == "failed" and "after 4 tries" in (item.reason or "")


class PoolClock:
    """A batch watched on a work pool, in fake seconds: the batch finishes at ``done_at``; every worker run ends
    at ``dead_at`` (its worker died) or, if none died, as soon as the batch finishes; a handed-out run finishes
    the batch ``relaunch_takes`` later."""

    def __init__(self, done_at: float, dead_at: float | None = None, relaunch_takes: float = 4.0) -> None:
        self.now, self.done_at, self.dead_at, self.relaunch_takes = 0.0, done_at, dead_at, relaunch_takes
        self.relaunched_at: list[float] = []

    def finished(self) -> bool:
        return self.now >= self.done_at

    def runs_ended(self) -> bool:
        if self.relaunched_at:
            return self.finished()
        return self.now >= (self.dead_at if self.dead_at is not None else self.done_at)

    def relaunch(self) -> None:
        self.relaunched_at.append(self.now)
        self.done_at = self.now + self.relaunch_takes

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def watch(self) -> int:
        return await_batch(self.finished, self.runs_ended, self.relaunch, lambda: None, max_relaunches=3,
                           sleep=self.sleep)


def test_workers_that_completed_because_the_batch_finished_between_two_looks_are_not_replaced() -> None:
    """The batch finishes (and its workers complete) while the batch flow sleeps between two looks: no third worker
    run (CI once saw three Completed worker runs of a batch run with --workers 2)."""
    clock = PoolClock(done_at=1.0)
    assert clock.watch() == 0 and clock.relaunched_at == []


def test_the_batch_end_is_seen_within_a_short_poll_while_the_runs_are_looked_at_seldom() -> None:
    """Asking the registry is cheap, asking Prefect for the runs is not: the end of a batch is not held up by the
    runs' poll (a 2 s poll cost each batch ~1 s at its end), and the runs are not asked for at every look."""
    clock = PoolClock(done_at=0.6)
    looks: list[float] = []
    runs_ended = clock.runs_ended

    def counted() -> bool:
        looks.append(clock.now)
        return runs_ended()

    clock.runs_ended = counted  # type: ignore[method-assign]
    assert clock.watch() == 0
    assert clock.now < 1.0 and looks == [0.0]


def test_every_worker_run_ended_with_inputs_left_hands_out_one_more() -> None:
    clock = PoolClock(done_at=float("inf"), dead_at=1.0)
    assert clock.watch() == 1 and clock.finished()
    assert len(clock.relaunched_at) == 1 and clock.relaunched_at[0] >= 1.0


def test_a_worker_run_left_running_by_a_dead_process_of_this_machine_is_over() -> None:
    """Prefect shows a killed worker's run Running for ever; its holder tag tells the batch it is gone."""
    import os
    from types import SimpleNamespace

    from prefect.states import Completed, Running, Scheduled

    from storage.records import holder_id

    alive = holder_id()
    dead = alive.replace(f"/{os.getpid()}@", "/999999999@")  # above any pid_max: no such process
    elsewhere = alive.split("@")[0] + "@another-boot/4026531836/1"

    def run(state: object, *holders: str) -> SimpleNamespace:
        return SimpleNamespace(state=state, tags=["other", *(HOLDER_TAG + h for h in holders)])

    assert run_over(run(Completed())) and run_over(run(Completed(), alive))
    assert run_over(run(Running(), dead))
    assert not run_over(run(Running(), alive))
    assert not run_over(run(Running()))  # untagged: the batch waits its grace for it
    assert not run_over(run(Running(), elsewhere))  # another machine's process: cannot tell from here
    assert not run_over(run(Scheduled(), dead)) and not run_over(run(None, dead))


def test_prefect_retries_a_task_only_on_transient_exceptions() -> None:
    """The task's retry condition asks the one classification (flows/retry.py → pipeline.core.retry); a dossier
    that failed on its input comes back as a Failed state without an exception and is never retried."""
    from prefect.states import Failed

    from flows.archive import _retry_if_transient

    unreachable = ConnectionRefusedError(111, "Connection refused")
    assert is_transient(unreachable)
    assert _retry_if_transient(None, None, Failed(data=unreachable))
    assert not _retry_if_transient(None, None, Failed(data=InputCorrupt("truncated")))
    assert not _retry_if_transient(None, None, Failed(data=ValueError("a bug")))
    assert not _retry_if_transient(None, None, Failed(message="ARC-1.pdf: input_empty: file is empty"))


def test_a_folder_source_lists_names_only_and_describes_one_entry_on_demand(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(b"%PDF-1.7\n%%EOF\n")
    (folder / "notes.txt").write_text("not a dossier")
    (folder / ".hidden").write_text("x")
    (folder / "manifest.csv").write_text("file,procedure\na.pdf,business_household_registration\n")
    source = BatchSource(str(folder))
    settings = Settings()
    assert source.names(settings) == ["a.pdf", "notes.txt"]
    with source.materialise("a.pdf", settings) as item:
        assert (item.path, item.procedure, item.refused) == (folder / "a.pdf", "business_household_registration", None)
    with source.materialise("notes.txt", settings) as item:
        assert item.refused and item.refused.startswith("input_unsupported")
    (folder / "a.pdf").unlink()
    with source.materialise("a.pdf", settings) as item:
        assert item.refused and item.refused.startswith("input_missing")

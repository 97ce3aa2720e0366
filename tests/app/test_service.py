"""The compute service (appkit.service) on its own: jobs gated by events, so every test is exact.

What is checked: identical requests from many threads share one job; queue positions count the
interactive lane first; slow jobs leave a worker to the interactive ones; torch threads summed over
the running jobs never exceed the cores, with idle cores lent to a slow job and given back at its
next report; nothing is cancelled when a waiter goes away; failures come back as messages (kept
when they are the user's, forgotten otherwise); finished results are bounded in count and bytes.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from appkit.service import ComputeService, Lane, ServiceBusy, State, default_layout, nbytes, result_of

WAIT = 30  # seconds: a generous bound on waits for events that must happen (never a timing claim)


class Recorder:
    """A ``set_threads`` stand-in: the thread count each worker set, in order."""

    def __init__(self):
        self.calls, self.lock = [], threading.Lock()

    def __call__(self, n: int) -> None:
        with self.lock:
            self.calls.append((threading.current_thread().name, n))


def gated(gate: threading.Event, value=None, started: threading.Event | None = None):
    def run(progress):
        if started is not None:
            started.set()
        assert gate.wait(WAIT)
        return value
    return run


def until(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def make():
    made = []

    def factory(workers=2, threads=1, cores=None, **kw):
        service = ComputeService(workers, threads, cores, set_threads=kw.pop("set_threads", Recorder()), **kw)
        made.append(service)
        return service

    yield factory
    for service in made:
        service.close()


def test_identical_requests_across_threads_share_one_job(make):
    service = make()
    calls = []
    gate = threading.Event()

    def run(progress):
        calls.append(1)
        assert gate.wait(WAIT)
        return np.arange(3)

    jobs, barrier = [], threading.Barrier(8)

    def ask():
        barrier.wait()
        jobs.append(service.submit(("k", 1), run))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.set()
    assert len({id(j) for j in jobs}) == 1
    assert np.array_equal(result_of(jobs[0]), np.arange(3))
    assert calls == [1]
    # a later request (a rerun, another session) gets the finished job: no new computation
    again = service.submit(("k", 1), run)
    assert again is jobs[0] and again.state is State.DONE and calls == [1]
    assert service.stats()["hits"] == 8


def test_queue_positions_interactive_lane_first(make):
    service = make(workers=1, threads=1)
    gate, started = threading.Event(), threading.Event()
    running = service.submit("busy", gated(gate, started=started))
    assert started.wait(WAIT)
    slow1 = service.submit("slow1", gated(gate), lane=Lane.SLOW)
    fast1 = service.submit("fast1", gated(gate))
    slow2 = service.submit("slow2", gated(gate), lane=Lane.SLOW)
    fast2 = service.submit("fast2", gated(gate))
    assert service.position(running) == 0
    assert [service.position(j) for j in (fast1, fast2, slow1, slow2)] == [1, 2, 3, 4]
    gate.set()
    assert service.wait([running, slow1, fast1, slow2, fast2], WAIT)
    starts = [j.started for j in (fast1, fast2, slow1, slow2)]
    assert starts == sorted(starts)  # one worker: the interactive lane first, each lane in order


def test_slow_jobs_leave_a_worker_for_interactive_ones(make):
    service = make(workers=2, threads=1)
    gate = threading.Event()
    s1, s2 = threading.Event(), threading.Event()
    slow1 = service.submit("slow1", gated(gate, started=s1), lane=Lane.SLOW)
    slow2 = service.submit("slow2", gated(gate, started=s2), lane=Lane.SLOW)
    assert s1.wait(WAIT)
    fast = service.submit("fast", lambda progress: "quick")
    assert result_of(fast) == "quick"  # while slow1 runs and slow2 waits: a worker stayed free
    assert slow2.state is State.QUEUED and not s2.is_set()
    gate.set()
    assert service.wait([slow1, slow2], WAIT)


def test_threads_never_exceed_cores_and_lent_cores_come_back():
    recorder = Recorder()
    service = ComputeService(2, 1, 2, set_threads=recorder)
    try:
        proceed, reported, fast_ran = threading.Event(), threading.Event(), threading.Event()
        seen = {}

        def slow(progress):
            seen["alone"] = job.threads      # nothing else waited at its start: both cores lent
            assert proceed.wait(WAIT)
            progress(0.5)                    # someone waits now: it gives the lent core back
            seen["shared"] = job.threads
            reported.set()
            assert fast_ran.wait(WAIT)       # still running while the fast job runs
            return "slow"

        def quick(progress):
            fast_ran.set()
            return service.stats()["threads_in_use"]

        job = service.submit("slow", slow, lane=Lane.SLOW)
        assert until(lambda: "alone" in seen)
        assert seen["alone"] == 2 and service.stats()["threads_in_use"] == 2
        fast = service.submit("fast", quick)
        assert until(lambda: fast.state is State.RUNNING)  # taken by the free worker, waiting for a core
        assert not fast.done.is_set()
        proceed.set()
        assert reported.wait(WAIT) and seen["shared"] == 1
        assert result_of(fast) == 2          # 1 (slow, given back) + 1 (fast): never 3
        assert result_of(job) == "slow"
        assert service.peak_threads <= 2
        # each worker set its own torch thread count: the slow one 2 then 1, the fast one 1
        by_thread = {}
        for name, n in recorder.calls:
            by_thread.setdefault(name, []).append(n)
        assert sorted(by_thread.values()) == sorted([[2, 1], [1]])
    finally:
        service.close()


def test_real_torch_threads_per_job():
    """With torch itself: each job sees the thread count the service gave it; the sum over the
    running jobs stays within the cores."""
    torch = pytest.importorskip("torch")
    service = ComputeService(2, 1, 2)
    try:
        gate, both = threading.Event(), threading.Barrier(2, timeout=WAIT)

        def job(progress):
            both.wait()                      # both run at once
            n = torch.get_num_threads()
            torch.ones(64, 64) @ torch.ones(64, 64)
            assert gate.wait(WAIT)
            return n

        a = service.submit("a", job)
        b = service.submit("b", job)
        assert until(lambda: a.state is State.RUNNING and b.state is State.RUNNING)
        gate.set()
        counts = [result_of(a), result_of(b)]
        assert sum(counts) <= 2 and min(counts) >= 1
        alone = service.submit("alone", lambda progress: torch.get_num_threads())
        assert result_of(alone) == 2         # alone: the idle core is lent
    finally:
        service.close()


def test_leaving_does_not_cancel(make):
    """A waiter that gives up (a rerun, another page) leaves the job running; it finishes and the
    next request gets the result without a new computation."""
    service = make()
    gate, calls = threading.Event(), []

    def run(progress):
        calls.append(1)
        assert gate.wait(WAIT)
        return "done"

    job = service.submit("k", run)
    assert not service.wait([job], timeout=0.05)  # the session stops waiting
    gate.set()
    assert service.submit("k", run) is job
    assert result_of(job) == "done" and calls == [1]


def test_failures_are_messages(make):
    service = make()

    def user_error(progress):
        raise ValueError("CAM needs a linear tail")

    calls = []

    def crash(progress):
        calls.append(1)
        raise MemoryError("out of memory")

    job = service.submit("cam", user_error)
    with pytest.raises(ValueError, match="linear tail"):
        result_of(job)
    assert job.state is State.FAILED and job.kept and job.error == "CAM needs a linear tail"
    assert service.submit("cam", user_error) is job  # kept: a rerun shows it without recomputing
    crashed = service.submit("oom", crash)
    with pytest.raises(MemoryError):
        result_of(crashed)
    assert crashed.error == "MemoryError: out of memory" and not crashed.kept
    retry = service.submit("oom", crash)           # forgotten: the next request tries again
    assert retry is not crashed
    with pytest.raises(MemoryError):
        result_of(retry)
    assert calls == [1, 1]
    with pytest.raises(ValueError, match="linear tail"):
        service.run("cam", user_error)
    assert service.run("ok", lambda progress: 7) == 7   # the workers survived


def test_finished_results_are_bounded_in_count_and_bytes(make):
    service = make(max_results=3, max_bytes=10_000)
    for i in range(5):
        service.run(("n", i), lambda progress: np.zeros(10, dtype=np.uint8))
    assert service.stats()["finished"] == 3
    assert service.lookup(("n", 0)) is None and service.lookup(("n", 4)) is not None
    service.lookup(("n", 2))                             # recently used: kept
    service.run("big", lambda progress: np.zeros(6_000, dtype=np.uint8))
    service.run("big2", lambda progress: np.zeros(6_000, dtype=np.uint8))
    stats = service.stats()
    assert stats["finished_bytes"] <= 10_000
    assert service.lookup("big") is None and service.lookup("big2") is not None


def test_progress_and_busy_queue(make):
    service = make(workers=1, max_queued=2)
    gate, started = threading.Event(), threading.Event()

    def run(progress):
        started.set()
        progress(0.25)
        assert gate.wait(WAIT)
        progress(float("nan"))  # ignored, never NaN on screen
        return 1

    job = service.submit("p", run, lane=Lane.SLOW)
    assert started.wait(WAIT) and until(lambda: job.progress == 0.25)
    service.submit("q1", gated(gate))
    service.submit("q2", gated(gate))
    with pytest.raises(ServiceBusy, match="busy"):
        service.submit("q3", gated(gate))
    gate.set()
    seen = []
    assert service.run("p", run, progress=seen.append) == 1
    assert job.progress == 1.0 and job.seconds is not None and job.seconds >= 0


def test_a_job_asking_for_another_runs_it_inline(make):
    """A job waiting for a queued job could hold the cores that one needs: inside a worker,
    ``run`` computes right there."""
    service = make(workers=1)
    outer = service.run("outer", lambda progress: service.run("inner", lambda p: 5) + 1)
    assert outer == 6


def test_layout_and_sizes():
    assert default_layout(1) == (1, 1)
    assert default_layout(2) == (2, 1)
    assert default_layout(4) == (2, 2)
    assert default_layout(16) == (4, 4)
    for n in range(1, 33):
        workers, threads = default_layout(n)
        assert threads <= n and workers >= 1
    assert nbytes(np.zeros(100, dtype=np.float32)) == 400
    assert nbytes({"a": np.zeros(10), "b": "xy"}) > 80
    with pytest.raises(ValueError):
        ComputeService(1, 4, 2)


def test_a_job_claims_its_queued_siblings_and_completes_them(make):
    """claim takes the interactive jobs of the caller's group out of the queue, those queued before
    it started and since (not slow ones, not others); complete ends them with their own result or
    failure; they never hold threads."""
    service = make(workers=1)
    gate, started = threading.Event(), threading.Event()
    blocker = service.submit("block", gated(gate, started=started))
    assert started.wait(WAIT)
    taken, never = [], lambda p: pytest.fail("a claimed job's own fn ran")
    assert service.claim() == []  # outside a job: nothing

    def leader(progress):
        siblings.append(service.submit(("view", 2), never, group="view"))  # queued after it started
        taken.extend(service.claim())
        assert all(j.state is State.RUNNING and j.threads == 0 for j in taken)
        assert service.stats()["running"] == 1 and service.position(taken[0]) == 0
        service.complete(taken[0], "r0")
        service.complete(taken[1], exc=ValueError("no linear tail"))
        service.complete(taken[2], exc=MemoryError("boom"))
        return "lead"

    lead = service.submit(("lead",), leader, group="view")  # first in the queue, behind the blocker
    siblings = [service.submit(("view", i), never, group="view") for i in range(2)]
    other = service.submit(("other", 0), lambda p: "other")
    slow = service.submit(("view", 9), lambda p: "slow", lane=Lane.SLOW, group="view")
    gate.set()
    assert result_of(lead) == "lead" and result_of(blocker) is None
    assert [j.key for j in taken] == [("view", 0), ("view", 1), ("view", 2)]
    assert result_of(siblings[0]) == "r0" and service.lookup(("view", 0)) is siblings[0]
    with pytest.raises(ValueError, match="linear tail"):
        result_of(siblings[1])
    assert siblings[1].kept and service.lookup(("view", 1)) is siblings[1]
    with pytest.raises(MemoryError):
        result_of(siblings[2])
    assert service.lookup(("view", 2)) is None  # an unexpected failure is forgotten, as a job's own
    assert result_of(other) == "other" and result_of(slow) == "slow"
    stats = service.stats()
    assert stats["running"] == 0 and stats["threads_in_use"] == 0 and stats["peak_jobs"] == 1


def test_cores_follow_a_cgroup_cpu_quota(tmp_path):
    """A container limited to 2 CPUs (cgroup v2 cpu.max, or v1's CFS quota) gets a layout for 2
    cores whatever the host has; no file or "max" means no limit; garbage is ignored."""
    from appkit.service import cores, cpu_quota

    v2 = tmp_path / "v2"
    v2.mkdir()
    assert cpu_quota(str(v2)) is None
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(str(v2)) is None
    (v2 / "cpu.max").write_text("200000 100000\n")
    assert cpu_quota(str(v2)) == 2.0 and cores(str(v2)) == min(2, cores(str(tmp_path / "none")))
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(str(v2)) == 1.5 and cores(str(v2)) == 1  # 1.5 CPUs: one whole core's worth of threads
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert cores(str(v2)) == 1
    (v2 / "cpu.max").write_text("garbage\n")
    assert cpu_quota(str(v2)) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(str(v1.parent)) is None
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    assert cpu_quota(str(v1.parent)) == 4.0


def test_a_group_is_set_aside_when_its_first_job_starts_and_leftovers_go_back(make):
    """With free workers, the first job of a group to start has the rest of its group set aside at
    once (no other worker starts them); what it does not end goes back to the queue when it ends."""
    service = make(workers=2)
    gate, ran, seen = threading.Event(), [], {}

    def leader(progress):
        assert gate.wait(WAIT)
        mine = service.claim()
        seen["claimed"] = sorted(j.key for j in mine)
        service.complete(next(j for j in mine if j.key == ("g", 1)), "one")
        return "lead"  # ("g", 2) is left unended

    def own(i):
        def run(progress):
            ran.append(i)
            return f"own {i}"
        return run

    with service._cond:  # all queued before any worker looks (as submit_many does)
        lead = service.submit(("g", 0), leader, group="G")
        first = service.submit(("g", 1), own(1), group="G")
        second = service.submit(("g", 2), own(2), group="G")
        other = service.submit(("h", 0), own(9))
    assert until(lambda: first.state is State.RUNNING and second.state is State.RUNNING)
    assert result_of(other) == "own 9"  # the second worker took the job outside the group
    gate.set()
    assert result_of(lead) == "lead" and seen["claimed"] == [("g", 1), ("g", 2)]
    assert result_of(first) == "one"
    assert result_of(second) == "own 2" and ran == [9, 2]  # requeued, then run on its own
    assert service.stats()["running"] == 0 and service.stats()["threads_in_use"] == 0

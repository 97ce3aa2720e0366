"""The app's compute service: one bounded pool of workers per server process, shared by every session.

Streamlit runs each browser session's script in a thread of its own. If those threads ran torch
themselves, every session would start torch's intra-op threads on all cores at once and the CPU
would thrash (two 2-thread explanations on 2 cores: each several times slower). So the scripts
never compute: they *submit jobs* here and wait for them.

* **Keyed, never twice.** A job is keyed by what determines its result (model, image hash, layer,
  target, method, options, question). Submitting a key that is queued, running or finished
  returns that same job: a rerun, or thirty students on the same sample, wait for one computation.
* **Bounded CPU.** ``workers`` threads run the jobs; the service owns ``cores`` CPU tokens and a
  running job holds one per torch intra-op thread it uses, so torch threads summed over the running
  jobs never exceed ``cores``. ``torch.set_num_threads`` acts on the calling thread (and on threads
  that have not used torch yet), so each worker sets its own count before each job.
* **Interactive first.** Jobs of the ``INTERACTIVE`` lane (single-pass explanations, predictions,
  activation maps, loading a model) are taken before ``SLOW`` ones (one network or tail pass per
  map or per ordering). With two workers or more, slow jobs occupy at most ``workers - 1`` of them,
  so a single-pass map never waits behind a Score-CAM.
* **Idle cores are lent.** A job starting while nothing else waits takes every free token. A slow
  job gives the extra ones back at its next progress report as soon as another job needs them
  (its reports come after each chunk of work: a fraction of a second), and borrows again when the
  others are done. A job that never reports keeps what it started with.
* **No cancellation.** A session that reruns or leaves a page only stops waiting; the job finishes
  and its result stays for the next visitor.
* **Bounded memory.** Finished results are kept in a least-recently-used table bounded in count
  and bytes. A failure with a message for the user (``ValueError``: e.g. CAM on a nonlinear tail)
  is kept like a result, so a rerun shows the message without recomputing; any other exception is
  reported to the sessions waiting for it, then forgotten (the next request tries again).
* **Bounded queue.** At most ``max_queued`` jobs wait; beyond that :meth:`submit` raises
  :class:`ServiceBusy` with a message for the user.

:func:`service` returns the process-wide instance (created on first use; its size comes from
``CAMLIB_APP_WORKERS`` / ``CAMLIB_APP_THREADS`` or from the number of cores, see
:func:`default_layout`). Set ``CAMLIB_SERVICE_TRACE`` to a file path to get one JSON line per job
start and end (running jobs, torch threads in use): the app benchmark reads it.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Hashable

import numpy as np


class Lane(enum.Enum):
    INTERACTIVE = "interactive"
    SLOW = "slow"


class State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ServiceBusy(RuntimeError):
    """Too many jobs are waiting; the message is for the user."""


Progress = Callable[[float], None]


@dataclasses.dataclass(eq=False)
class Job:
    """One computation. Read its fields from any thread; only the service writes them."""

    key: Hashable
    label: str
    lane: Lane
    fn: Callable[[Progress], Any] = dataclasses.field(repr=False)
    expected: float | None = None      # expected seconds, when known before it runs
    state: State = State.QUEUED
    progress: float = 0.0
    result: Any = dataclasses.field(default=None, repr=False)
    error: str | None = None           # a message for the user when it failed
    kept: bool = False                 # a failure kept like a result (deterministic, user-facing)
    exception: BaseException | None = dataclasses.field(default=None, repr=False)  # an unexpected one
    submitted: float = 0.0             # time.monotonic()
    started: float | None = None
    finished: float | None = None
    threads: int = 0                   # torch intra-op threads it holds now (while running)
    peak_threads: int = 0
    nbytes: int = 0
    group: Hashable | None = None      # jobs of one group may be computed together (claim)
    claimed: list = dataclasses.field(default_factory=list, repr=False)  # taken for it, not yet ended
    claimer: "Job | None" = dataclasses.field(default=None, repr=False)  # the job that took this one
    done: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)

    @property
    def finished_ok(self) -> bool:
        return self.state is State.DONE

    @property
    def seconds(self) -> float | None:
        """Compute time (start to end of the computation itself, not the wait in the queue)."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def elapsed(self) -> float:
        return 0.0 if self.started is None else (self.finished or time.monotonic()) - self.started


def cores(cgroup: str = "/sys/fs/cgroup") -> int:
    """CPU cores this process may use: its CPU affinity, at most the whole CPUs of its cgroup's CPU
    quota (a container started with ``--cpus 2``, e.g. a Hugging Face Space, sees every core of the
    host but may use two)."""
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        n = max(1, os.cpu_count() or 1)
    quota = cpu_quota(cgroup)
    return n if quota is None else max(1, min(n, int(quota)))


def cpu_quota(cgroup: str = "/sys/fs/cgroup") -> float | None:
    """The cgroup's CPU quota in CPUs (quota / period), None when unlimited or unknown: cgroup v2's
    ``cpu.max`` ("200000 100000"; "max 100000" is unlimited), else v1's ``cpu/cpu.cfs_quota_us``
    (-1 is unlimited) and ``cpu/cpu.cfs_period_us``."""
    def read(path: str) -> str | None:
        try:
            with open(os.path.join(cgroup, path)) as f:
                return f.read().strip()
        except OSError:
            return None

    try:
        v2 = read("cpu.max")
        if v2 is not None:
            quota, period = (v2.split() + ["100000"])[:2]
            return None if quota == "max" else float(quota) / float(period)
        quota, period = read("cpu/cpu.cfs_quota_us"), read("cpu/cpu.cfs_period_us")
        if quota is None or period is None or float(quota) <= 0:
            return None
        return float(quota) / float(period)
    except (ValueError, ZeroDivisionError):
        return None


def default_layout(n_cores: int) -> tuple[int, int]:
    """(workers, torch threads per job) for ``n_cores``: two workers below 8 cores, four from 8;
    each job's base share is ``n_cores // workers`` threads (idle cores are lent on top). One core:
    one worker with one thread."""
    if n_cores <= 1:
        return 1, 1
    workers = 2 if n_cores < 8 else 4
    return workers, max(1, n_cores // workers)


def nbytes(value) -> int:
    """Approximate memory of a result: numpy arrays, bytes and strings counted, containers walked."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, dict):
        return 64 + sum(nbytes(k) + nbytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 64 + sum(nbytes(v) for v in value)
    if hasattr(value, "nbytes"):
        try:
            return int(value.nbytes)
        except (TypeError, ValueError):
            pass
    return 64


class ComputeService:
    """See the module docstring. ``workers`` threads, ``threads`` torch threads per job (the base
    share), ``cores`` CPU tokens (default ``workers * threads``)."""

    def __init__(self, workers: int = 2, threads: int = 1, cores: int | None = None, *,
                 max_results: int = 512, max_bytes: int = 512 * 2**20, max_queued: int = 256,
                 set_threads: Callable[[int], None] | None = None, trace: str | None = None):
        if workers < 1 or threads < 1:
            raise ValueError("workers and threads must be at least 1")
        self.workers = int(workers)
        self.threads = int(threads)
        self.cores = int(cores if cores is not None else workers * threads)
        if self.threads > self.cores:
            raise ValueError(f"{threads} threads per job exceed the {self.cores} cores")
        self.max_results, self.max_bytes, self.max_queued = int(max_results), int(max_bytes), int(max_queued)
        self.max_slow = max(1, self.workers - 1)
        self._set_threads = set_threads or _torch_set_threads
        self._cond = threading.Condition()
        self._jobs: dict[Hashable, Job] = {}                           # queued or running
        self._finished: collections.OrderedDict[Hashable, Job] = collections.OrderedDict()  # LRU
        self._finished_bytes = 0
        self._queues = {Lane.INTERACTIVE: collections.deque(), Lane.SLOW: collections.deque()}
        self._running: list[Job] = []
        self._free = self.cores
        self._token_waiters = 0
        self._closed = False
        self._trace_path = trace
        self._trace_lock = threading.Lock()
        self.peak_threads = 0
        self.peak_jobs = 0
        self.computed = 0                                               # jobs run to the end
        self.hits = 0                                                   # submits answered by an existing job
        self._pool = [threading.Thread(target=self._work, name=f"camlib-compute-{i}", daemon=True)
                      for i in range(self.workers)]
        for thread in self._pool:
            thread.start()

    # -- asking -----------------------------------------------------------------------------------

    def submit(self, key: Hashable, fn: Callable[[Progress], Any], *, label: str = "",
               lane: Lane = Lane.INTERACTIVE, expected: float | None = None, group: Hashable | None = None) -> Job:
        """The job for ``key``: the existing one (queued, running or finished), else a new one
        running ``fn(progress)``. ``group``: when a job of a group starts, the queued interactive
        jobs of its group are set aside for it at once (no other worker starts them) and its ``fn``
        takes them with :meth:`claim`. Raises :class:`ServiceBusy` when the queue is full."""
        with self._cond:
            job = self.lookup(key)
            if job is not None:
                self.hits += 1
                return job
            if self._closed:
                raise ServiceBusy("The compute service is shutting down.")
            waiting = sum(len(q) for q in self._queues.values())
            if waiting >= self.max_queued:
                raise ServiceBusy(f"The server is busy: {waiting} computations are waiting. "
                                  "Try again in a minute.")
            job = Job(key=key, label=label or str(key), lane=lane, fn=fn, expected=expected,
                      submitted=time.monotonic(), group=group)
            self._jobs[key] = job
            self._queues[lane].append(job)
            self._cond.notify_all()
            return job

    def submit_many(self, specs) -> list[Job]:
        """:meth:`submit` for each ``(key, fn, keywords)`` of ``specs``, all under one hold of the
        lock: no worker starts one of them before all are queued (the first to start can then
        :meth:`claim` the others)."""
        with self._cond:  # a reentrant lock: submit takes it again
            return [self.submit(key, fn, **keywords) for key, fn, keywords in specs]

    def claim(self) -> list[Job]:
        """Called by a running job's ``fn``: the other jobs of its group (:meth:`submit`), to compute
        together with its own (e.g. several single-pass maps of one view from one network pass):
        those set aside when it started, and those of its group queued since. End each with
        :meth:`complete`; one left unended when the caller ends goes back to the queue. They run in
        the caller's worker and threads: they count as neither running jobs nor torch threads.
        Outside a job, or for a job without a group: none."""
        owner = getattr(_WORKER, "job", None)
        if owner is None or owner.group is None:
            return []
        with self._cond:
            fresh = self._take_group(owner)
        for job in fresh:
            self._trace("start", job)
        return list(owner.claimed)

    def _take_group(self, owner: Job) -> list[Job]:
        """Take the queued interactive jobs of ``owner``'s group out of the queue, as set aside for
        it (lock held); returns them."""
        queue = self._queues[Lane.INTERACTIVE]
        taken = [job for job in queue if job.group == owner.group]
        now = time.monotonic()
        for job in taken:
            queue.remove(job)
            job.state, job.started, job.claimer = State.RUNNING, now, owner
            owner.claimed.append(job)
        return taken

    def complete(self, job: Job, result=None, exc: BaseException | None = None) -> None:
        """End a job taken with :meth:`claim`: its result, or its failure (as a job's own)."""
        self._finish(job, result, exc)

    def lookup(self, key: Hashable) -> Job | None:
        """The queued, running or finished job of ``key`` (a finished one becomes most recent)."""
        with self._cond:
            job = self._jobs.get(key)
            if job is None and key in self._finished:
                self._finished.move_to_end(key)
                job = self._finished[key]
            return job

    def position(self, job: Job) -> int:
        """0 while running or finished; n ≥ 1 for the n-th job to start (its lane's priority counted:
        every interactive job queued starts before a slow one)."""
        with self._cond:
            if job.state is not State.QUEUED:
                return 0
            interactive = self._queues[Lane.INTERACTIVE]
            if job.lane is Lane.INTERACTIVE:
                return _index(interactive, job) + 1
            return len(interactive) + _index(self._queues[Lane.SLOW], job) + 1

    def wait(self, jobs, timeout: float | None = None) -> bool:
        """Wait until every job in ``jobs`` has finished or ``timeout`` seconds passed; True if all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.done.wait(left):
                return False
        return True

    def wait_any(self, jobs, timeout: float) -> None:
        """Return when one of ``jobs`` finishes (or any job changes state), or after ``timeout``."""
        with self._cond:
            if not any(j.done.is_set() for j in jobs):
                self._cond.wait(timeout)

    def run(self, key: Hashable, fn: Callable[[Progress], Any], *, label: str = "", lane: Lane = Lane.INTERACTIVE,
            expected: float | None = None, progress: Progress | None = None, timeout: float | None = None):
        """Submit and wait: the result, or the failure raised again (``ValueError`` with the user
        message for a kept failure, ``RuntimeError`` otherwise). ``progress`` (called from this,
        the waiting thread) receives the job's fraction done while it runs.

        Called from inside a job (a worker thread), ``fn`` runs right there, uncached: a job that
        waited for another could hold the cores that one needs."""
        if getattr(_WORKER, "busy", False):
            finished = self.lookup(key)
            if finished is not None and finished.done.is_set():
                return result_of(finished)
            return fn(progress or (lambda fraction: None))
        job = self.submit(key, fn, label=label, lane=lane, expected=expected)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = -1.0
        while not job.done.wait(0.1):
            if progress is not None and job.progress != last:
                last = job.progress
                progress(last)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{job.label} did not finish within {timeout} s")
        return result_of(job)

    # -- reading -----------------------------------------------------------------------------------

    def stats(self) -> dict:
        """Workers, threads, running and queued jobs, torch threads in use, peaks, cache size."""
        with self._cond:
            return {
                "workers": self.workers, "threads_per_job": self.threads, "cores": self.cores,
                "running": len(self._running), "queued": sum(len(q) for q in self._queues.values()),
                "threads_in_use": self.cores - self._free, "peak_threads": self.peak_threads,
                "peak_jobs": self.peak_jobs, "finished": len(self._finished),
                "finished_bytes": self._finished_bytes, "computed": self.computed, "hits": self.hits,
            }

    def busy(self, lane: Lane) -> bool:
        """Whether a job of ``lane`` is queued or running."""
        with self._cond:
            return bool(self._queues[lane]) or any(job.lane is lane for job in self._running)

    def running(self) -> list[Job]:
        with self._cond:
            return list(self._running)

    def forget(self, key: Hashable) -> None:
        """Drop a finished result (tests; a running or queued job is left alone)."""
        with self._cond:
            job = self._finished.pop(key, None)
            if job is not None:
                self._finished_bytes -= job.nbytes

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers after the running jobs (queued ones are dropped, their waiters told)."""
        with self._cond:
            self._closed = True
            for queue in self._queues.values():
                while queue:
                    job = queue.popleft()
                    self._jobs.pop(job.key, None)
                    job.state, job.error = State.FAILED, "The compute service was shut down."
                    job.done.set()
            self._cond.notify_all()
        for thread in self._pool:
            thread.join(timeout)

    # -- the workers -------------------------------------------------------------------------------

    def _next(self) -> Job | None:
        """The next job to start (caller holds the lock): interactive first; slow ones while fewer
        than ``max_slow`` run."""
        if self._queues[Lane.INTERACTIVE]:
            return self._queues[Lane.INTERACTIVE].popleft()
        slow_running = sum(1 for j in self._running if j.lane is Lane.SLOW)
        if self._queues[Lane.SLOW] and slow_running < self.max_slow:
            return self._queues[Lane.SLOW].popleft()
        return None

    def _work(self) -> None:
        _WORKER.busy = True
        while True:
            with self._cond:
                job = None
                while job is None:
                    if self._closed:
                        return
                    job = self._next()
                    if job is None:
                        self._cond.wait()
                job.state = State.RUNNING
                self._running.append(job)
                if job.group is not None:  # its group's queued jobs wait for it, not for a worker
                    self._take_group(job)
                # Its base share of the cores: wait while a slow job holds lent tokens (it gives
                # them back at its next progress report).
                self._token_waiters += 1
                while self._free < self.threads:
                    self._cond.wait()
                self._token_waiters -= 1
                take = self.threads
                if not self._token_waiters and not any(self._queues.values()):
                    take += self._free - self.threads  # nothing else waits: borrow the idle cores
                self._free -= take
                job.threads = job.peak_threads = take
                job.started = time.monotonic()
                self._account()
            self._trace("start", job)
            for other in list(job.claimed):
                self._trace("start", other)
            self._set_threads(job.threads)
            _WORKER.job = job
            try:
                result = job.fn(lambda fraction, job=job: self._report(job, fraction))
            except BaseException as exc:  # noqa: BLE001 - every failure becomes a message
                self._finish(job, None, exc)
            else:
                self._finish(job, result, None)
            finally:
                _WORKER.job = None

    def _report(self, job: Job, fraction: float) -> None:
        """A job's progress callback (in its worker thread): record it; a slow job gives lent
        cores back when others wait, or borrows idle ones."""
        try:
            fraction = float(fraction)
        except (TypeError, ValueError):
            return
        if math.isfinite(fraction):
            job.progress = min(max(fraction, 0.0), 1.0)
        if job.lane is not Lane.SLOW:
            return
        with self._cond:
            others_wait = self._token_waiters > 0 or bool(self._queues[Lane.INTERACTIVE])
            if others_wait and job.threads > self.threads:
                want = self.threads
            elif not others_wait and self._free > 0 and not any(self._queues.values()):
                want = job.threads + self._free
            else:
                return
            self._free += job.threads - want
            job.threads = want
            job.peak_threads = max(job.peak_threads, want)
            self._account()
            self._cond.notify_all()
        self._set_threads(want)
        self._trace("threads", job)

    def _finish(self, job: Job, result, exc: BaseException | None) -> None:
        with self._cond:
            if job.claimer is not None and job in job.claimer.claimed:
                job.claimer.claimed.remove(job)
            for left in reversed(job.claimed):  # taken for this job but not ended by it: back to the queue
                left.state, left.started, left.claimer = State.QUEUED, None, None
                self._queues[left.lane].appendleft(left)
            job.claimed = []
            self._free += job.threads
            job.threads = 0
            if job in self._running:  # not a claimed job
                self._running.remove(job)
            self._jobs.pop(job.key, None)
            job.finished = time.monotonic()
            if exc is None:
                job.state, job.result, job.progress = State.DONE, result, 1.0
                job.nbytes = nbytes(result)
                self._keep(job)
                self.computed += 1
            else:
                job.state = State.FAILED
                job.kept = isinstance(exc, ValueError)
                job.error = str(exc) if job.kept else f"{type(exc).__name__}: {exc}"
                job.exception = None if job.kept else exc
                job.nbytes = nbytes(job.error)
                if job.kept:
                    self._keep(job)
            job.fn = None  # release the closure (the image) now
            self._account()
            job.done.set()
            self._cond.notify_all()
        self._trace("end", job)

    def _keep(self, job: Job) -> None:
        """Add a finished job to the LRU table and evict the oldest beyond the bounds (lock held)."""
        self._finished[job.key] = job
        self._finished_bytes += job.nbytes
        while self._finished and (len(self._finished) > self.max_results or self._finished_bytes > self.max_bytes):
            _, old = self._finished.popitem(last=False)
            self._finished_bytes -= old.nbytes

    def _account(self) -> None:
        used = self.cores - self._free
        self.peak_threads = max(self.peak_threads, used)
        self.peak_jobs = max(self.peak_jobs, len(self._running))

    def _trace(self, event: str, job: Job) -> None:
        if not self._trace_path:
            return
        with self._cond:
            line = {"t": time.time(), "event": event, "job": job.label, "lane": job.lane.value,
                    "state": job.state.value, "job_threads": job.threads, "running": len(self._running),
                    "threads_in_use": self.cores - self._free, "cores": self.cores,
                    "queued": sum(len(q) for q in self._queues.values()), "seconds": job.seconds}
        with self._trace_lock, open(self._trace_path, "a") as out:
            out.write(json.dumps(line) + "\n")


def result_of(job: Job):
    """A finished job's result, or its failure raised again: ``ValueError`` (the user message) for a
    kept failure, the exception itself for an unexpected one (``RuntimeError`` when there is none:
    the service shut down)."""
    job.done.wait()
    if job.state is State.DONE:
        return job.result
    if job.kept:
        raise ValueError(job.error)
    if job.exception is not None and isinstance(job.exception, Exception):
        raise job.exception
    raise RuntimeError(job.error)


_WORKER = threading.local()


def _index(queue, job) -> int:
    for i, queued in enumerate(queue):
        if queued is job:
            return i
    return len(queue)


def _torch_set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


_SERVICE: ComputeService | None = None
_SERVICE_LOCK = threading.Lock()


def layout_from_environment() -> tuple[int, int, int]:
    """(workers, threads, cores): ``CAMLIB_APP_WORKERS`` / ``CAMLIB_APP_THREADS`` when set (cores
    = their product, at most the machine's), else :func:`default_layout`."""
    n = cores()
    workers, threads = default_layout(n)
    workers = int(os.environ.get("CAMLIB_APP_WORKERS", workers))
    threads = int(os.environ.get("CAMLIB_APP_THREADS", threads))
    return workers, threads, max(threads, min(n, workers * threads))


#: Seconds a thread may hold the GIL while another waits for it (Python's default: 0.005).
SWITCH_INTERVAL = 0.0001


def switch_interval() -> float:
    """The GIL switch interval the service sets: ``CAMLIB_APP_SWITCH_INTERVAL`` seconds, else
    :data:`SWITCH_INTERVAL`.

    A worker runs the network op by op; torch lets go of the GIL during each op and must take it
    back before the next. While a script thread runs Python (drawing a page, encoding an image), the
    worker waits up to one switch interval per op: with Python's 5 ms a Grad-CAM on
    EfficientNet-Lite0 (a few hundred ops) took 2.6 s instead of 0.033 s beside two busy Python
    threads, 0.15 s with 0.1 ms (``python -m appkit.bench --gil``; docs/APP.md)."""
    return float(os.environ.get("CAMLIB_APP_SWITCH_INTERVAL", SWITCH_INTERVAL))


def service() -> ComputeService:
    """The process-wide compute service (created on first use, never twice). Creating it sets the
    process's GIL switch interval (:func:`switch_interval`)."""
    global _SERVICE
    with _SERVICE_LOCK:
        if _SERVICE is None:
            sys.setswitchinterval(switch_interval())
            workers, threads, n = layout_from_environment()
            _SERVICE = ComputeService(workers, threads, n, trace=os.environ.get("CAMLIB_SERVICE_TRACE") or None)
        return _SERVICE

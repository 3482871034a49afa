"""``concurrent.futures.Executor`` factories: serial (debugging), local processes (default) and Dask distributed.

Tasks sent to these executors must be picklable module-level functions with picklable arguments. Each worker keeps
torch (and BLAS) at ``threads_per_worker`` threads: process workers through the pool initialiser, Dask workers
through ``Client.run`` at start-up (each Dask worker runs one task at a time); alkit's own tasks also call
:func:`alkit._compat.set_torch_threads` so workers that join a remote cluster later behave the same.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Iterator

from alkit.errors import ConfigError

log = logging.getLogger(__name__)

EXECUTORS = ("serial", "process", "dask")


class SerialExecutor(Executor):
    """Runs each task in the calling process when it is submitted (for debugging and tiny runs)."""

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._shutdown:
            raise RuntimeError("cannot submit to a SerialExecutor after shutdown")
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future, like other executors
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


def run_each(executor: Executor, fn, arg_tuples) -> Iterator[tuple[int, Future]]:
    """Run ``fn(*args)`` for every tuple of ``arg_tuples`` and yield ``(index, finished future)`` as each finishes.

    Pool executors get every task at once; the serial executor runs one task per step of the iteration, so that the
    caller commits each result before the next task starts (a kill then loses at most the task in progress)."""
    if isinstance(executor, SerialExecutor):
        for i, args in enumerate(arg_tuples):
            yield i, executor.submit(fn, *args)
        return
    from concurrent.futures import as_completed

    futures = {executor.submit(fn, *args): i for i, args in enumerate(arg_tuples)}
    for fut in as_completed(futures):
        yield futures[fut], fut


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this worker when its parent dies.

    Without it, a campaign killed with ``kill -9`` leaves its pool workers running (seen here: two orphaned M3GNet
    workers went on writing snapshots into the pool directory that the resumed run was rewriting).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except OSError:  # pragma: no cover - no libc.so.6 (not glibc): keep going without the guard
        pass


def init_worker(threads: int = 1) -> None:
    """Process-pool initialiser: limit torch/BLAS threads in the worker; die with the parent process."""
    _die_with_parent()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # read by torch/BLAS when they are first imported
    if "torch" in sys.modules:
        from alkit._compat import set_torch_threads

        set_torch_threads(threads)


@contextlib.contextmanager
def make_executor(
    kind: str = "process",
    n_workers: int = 2,
    address: str | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | None = "6GB",
) -> Iterator[Executor]:
    """Context manager yielding an Executor of ``kind``:

    - ``"serial"``: in-process (``n_workers`` ignored);
    - ``"process"``: ``ProcessPoolExecutor`` with ``n_workers`` spawned processes, ``threads_per_worker`` torch threads;
    - ``"dask"``: a ``distributed.Client`` on ``address`` (an existing scheduler) or on a new ``LocalCluster`` of
      ``n_workers`` worker processes (``memory_limit`` each), through ``Client.get_executor()``.

    Everything is shut down on exit.
    """
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor {kind!r}: use one of {EXECUTORS}")
    if kind != "serial" and address is None and int(n_workers) < 1:
        raise ConfigError(f"n_workers must be >= 1, got {n_workers}")
    if int(threads_per_worker) < 1:
        raise ConfigError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
    if kind == "serial":
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(int(threads_per_worker))
        ex = SerialExecutor()
        try:
            yield ex
        finally:
            ex.shutdown()
            torch.set_num_threads(before)
        return
    if kind == "process":
        ex = ProcessPoolExecutor(
            max_workers=int(n_workers),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(int(threads_per_worker),),
        )
        try:
            yield ex
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - distributed is a pinned dependency
        raise ConfigError("the dask executor needs dask[distributed]") from exc
    cluster = None
    if address is not None:
        try:
            client = Client(address, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler at {address!r}: {exc}") from exc
    else:
        import dask

        # Dask's statistical profiler samples every worker thread every 10 ms; long MD tasks do not need it.
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = LocalCluster(
                n_workers=int(n_workers),
                threads_per_worker=1,  # one task at a time per worker process; torch threads are set below
                processes=True,
                dashboard_address=":0",  # never collide with another cluster on this machine
                memory_limit=memory_limit,
            )
        client = Client(cluster)
    client.run(init_worker, int(threads_per_worker))  # workers joining later: alkit's tasks set threads themselves
    log.info("Dask executor on %s", address if cluster is None else cluster.scheduler_address)
    try:
        yield client.get_executor(pure=False)  # every submit is a new task (Dask dedups pure calls)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

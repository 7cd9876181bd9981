"""Where notebooks run: one notebook as a task, and executors that run many.

:func:`run_notebook` executes one :class:`NotebookTask` with papermill and
exports its page (:mod:`quarterpanic.report.pages`); it never raises for a failing
notebook but returns a :class:`NotebookResult` saying what happened.
Executors share one small interface, ``execute(tasks, on_event) -> results``
(results in task order, ``on_event`` called on each start and finish):
:class:`LocalExecutor` (this process, or a pool of worker processes) and
:class:`DaskExecutor` (``client.submit`` per notebook on a ``distributed``
cluster). Each notebook gets its own kernel either way. :class:`Progress`
turns the events into lines on stderr.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import queue
import re
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import nbformat
import papermill
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError
from traitlets.config import Config

from quarterpanic.errors import ParameterError, RunError
from quarterpanic.report.pages import error_summary, export_report
from quarterpanic.run.processes import TrackedKernelManager, kill_kernels, watch_lifeline
from quarterpanic.util import utc_now

log = logging.getLogger("quarterpanic.run.executors")


STATUS_OK = "ok"
STATUS_FAILED = "failed"  # a cell raised (PapermillExecutionError) or ran past --cell-timeout
STATUS_KERNEL_DIED = "kernel died"  # DeadKernelError
STATUS_ERROR = "error"  # could not run or export at all (no kernel, unreadable notebook, ...)

@dataclass(frozen=True)
class NotebookTask:
    """Everything one worker needs to execute and export one notebook (plain, picklable)."""

    name: str
    source: str
    executed: str
    html: str
    summary_path: str
    parameters: dict[str, Any]
    cwd: str
    title: str
    run_id: str
    kernel_name: str | None = None
    start_timeout: int = 120
    execution_timeout: int | None = None
    org: str | None = None  # set for per-organisation runs (``--per-org``): the one org passed as ``orgs``
    segment: str | None = None  # set for per-segment runs (``--per-segment``): the segment passed as ``segment``

    @property
    def page_title(self) -> str:
        """The title with what the report is restricted to: ``Qualification decay — Globex, Enterprise segment``."""
        scope = ", ".join(part for part in (self.org, self.segment and f"{self.segment} segment") if part)
        return f"{self.title} — {scope}" if scope else self.title


@dataclass
class NotebookResult:
    """How one notebook went."""

    name: str
    status: str
    started_at: str
    duration_s: float
    error: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    html_written: bool = False

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


# Set in pool workers so that a notebook's start is reported when it really starts.
_start_events: Any = None


def run_notebook(task: NotebookTask) -> NotebookResult:
    """Execute ``task`` with papermill, export its page with nbconvert; never raises for notebook errors."""
    if _start_events is not None:
        _start_events.put(task.name)
    started_at = utc_now()
    clock = time.perf_counter()
    status, error = STATUS_OK, None
    try:
        with tempfile.TemporaryDirectory(prefix="qp-kernel-") as sockets:
            papermill.execute_notebook(
                task.source,
                task.executed,
                parameters=task.parameters,
                cwd=task.cwd,
                kernel_name=task.kernel_name,
                progress_bar=False,
                start_timeout=task.start_timeout,
                execution_timeout=task.execution_timeout,
                config=kernel_config(sockets),
                kernel_manager_class=TrackedKernelManager,  # so that a stopped run can kill its kernels
            )
    except PapermillExecutionError as err:
        status = STATUS_FAILED
        error = {
            "cell_index": _source_cell_index(task.executed, err.cell_index),
            "execution_count": err.exec_count,
            "ename": err.ename,
            "evalue": _short(err.evalue),
        }
    except DeadKernelError as err:
        status = STATUS_KERNEL_DIED
        error = {
            "cell_index": _running_cell_index(task.executed),
            "execution_count": None,
            "ename": "DeadKernelError",
            "evalue": _short(str(err)),
        }
    except CellTimeoutError as err:
        status = STATUS_FAILED
        error = {
            "cell_index": _running_cell_index(task.executed),
            "execution_count": None,
            "ename": "CellTimeoutError",
            "evalue": _short(str(err).splitlines()[0]),  # the rest previews the cell's code
        }
    except Exception as err:  # no kernel, unreadable notebook: the run goes on without it
        status = STATUS_ERROR
        error = {"cell_index": None, "execution_count": None, "ename": type(err).__name__, "evalue": _short(str(err))}
    summary = _read_summary(task.summary_path)
    html_written = False
    if Path(task.executed).is_file():
        try:
            export_report(
                task.executed,
                task.html,
                title=task.page_title,
                run_id=task.run_id,
                status=status,
                error=error,
                resources_dir=task.cwd,
            )
            html_written = True
        except Exception as err:  # a page that cannot be exported is a failed report, not a crash
            log.exception("%s: HTML export failed", task.name)
            if status == STATUS_OK:
                status = STATUS_ERROR
                error = {"cell_index": None, "execution_count": None, "ename": type(err).__name__,
                         "evalue": f"HTML export failed: {_short(str(err))}"}
    return NotebookResult(
        name=task.name,
        status=status,
        started_at=started_at,
        duration_s=round(time.perf_counter() - clock, 3),
        error=error,
        summary=summary,
        html_written=html_written,
    )


def kernel_config(socket_dir: str) -> Config:
    """Kernels talk over Unix sockets in a private folder rather than open TCP ports
    (quieter too: ipykernel warns about unencrypted TCP on every start). TCP on Windows."""
    if os.name == "nt":
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(socket_dir, "kernel")}})


def _source_cell_index(executed: str, executed_index: int | None) -> int | None:
    """The failing cell's index in the source notebook (papermill counts its injected cell)."""
    if executed_index is None:
        return None
    try:
        cells = [c for c in nbformat.read(executed, as_version=4).cells
                 if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    except Exception:
        return executed_index
    injected = [i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", [])]
    return executed_index - sum(1 for i in injected if i < executed_index)


def _running_cell_index(executed: str) -> int | None:
    """The source index of the cell that was running when the kernel died: the last one started."""
    try:
        cells = nbformat.read(executed, as_version=4).cells
    except Exception:
        return None
    source_cells = [c for c in cells if not {"injected-parameters", "papermill-error-cell-tag"}
                    & set(c.metadata.get("tags", []))]
    started = [i for i, c in enumerate(source_cells) if c.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def _read_summary(path: str) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return {"error": f"summary unreadable: {err}"}


def _short(text: Any, limit: int = 2000) -> str:
    text = re.sub("\x1b\\[[0-9;]*[A-Za-z]", "", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- executors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """``start`` (result is None) or ``finish`` of one notebook."""

    kind: str
    name: str
    result: NotebookResult | None = None


EventHandler = Callable[[Event], None]


class Executor(Protocol):
    """Runs tasks and returns their results in task order; reports starts and finishes."""

    def execute(self, tasks: Sequence[NotebookTask], on_event: EventHandler) -> list[NotebookResult]: ...

    def describe(self) -> dict[str, Any]: ...


class LocalExecutor:
    """Notebooks on this machine: one after another in this process, or ``jobs`` worker processes.

    Each papermill execution starts its own kernel, so parallel notebooks never
    share state. When the run is interrupted (``KeyboardInterrupt``, or
    :class:`quarterpanic.run.processes.RunInterrupted` for ``SIGTERM`` under
    :func:`~quarterpanic.run.processes.signals_interrupt`) the kernels and
    workers are killed before the exception goes on; workers also stop by
    themselves when the run's process is gone (see :mod:`quarterpanic.run.processes`).
    """

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise ParameterError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "jobs": self.jobs}

    def execute(self, tasks: Sequence[NotebookTask], on_event: EventHandler) -> list[NotebookResult]:
        if self.jobs == 1 or len(tasks) <= 1:
            results = []
            for task in tasks:
                on_event(Event("start", task.name))
                result = _run_interruptible(task)
                on_event(Event("finish", task.name, result))
                results.append(result)
            return results
        return self._execute_in_pool(tasks, on_event)

    def _execute_in_pool(self, tasks: Sequence[NotebookTask], on_event: EventHandler) -> list[NotebookResult]:
        context = _pool_context()
        starts = context.Queue()
        stop = threading.Event()

        def relay_starts() -> None:
            while not stop.is_set():
                try:
                    on_event(Event("start", starts.get(timeout=0.1)))
                except queue.Empty:
                    continue

        relay = threading.Thread(target=relay_starts, name="quarterpanic-starts", daemon=True)
        relay.start()
        # Workers hold only the read end; when this end closes (the run finished, was
        # interrupted or killed) each worker kills its kernel and exits.
        lifeline, lifeline_end = context.Pipe(duplex=False)
        results: dict[str, NotebookResult] = {}
        try:
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=min(self.jobs, len(tasks)),
                mp_context=context,
                initializer=_init_worker,
                initargs=(starts, lifeline),
            ) as pool:
                try:
                    futures = {pool.submit(run_notebook, task): task for task in tasks}
                    for future in concurrent.futures.as_completed(futures):
                        task = futures[future]
                        result = _result_or_crash(future, task)
                        _drain(starts, on_event)
                        results[task.name] = result
                        on_event(Event("finish", task.name, result))
                except BaseException:  # interrupted: stop the workers now rather than wait for their notebooks
                    lifeline_end.close()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        finally:
            lifeline_end.close()
            lifeline.close()
            stop.set()
            relay.join()
            starts.close()
        return [results[task.name] for task in tasks]


def _pool_context() -> Any:
    # Workers must not be forked from this process (its threads and zmq state do not survive a
    # fork), and a clean interpreter per worker re-imports papermill and nbconvert (seconds each).
    # A fork server that imported this module once forks clean workers quickly.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker(starts: Any, lifeline: Any) -> None:
    global _start_events
    _start_events = starts
    watch_lifeline(lifeline)


def _run_interruptible(task: NotebookTask) -> NotebookResult:
    """:func:`run_notebook` in a helper thread, so that an interrupt reaches this (main) thread:
    nbclient, in the main thread, would take ``SIGINT`` and ``SIGTERM`` for itself, shut the
    kernel down and let the run go on with the next notebook. Interrupted, the kernel is killed."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = run_notebook(task)
        except BaseException as err:  # handed to the caller's thread
            outcome["error"] = err

    worker = threading.Thread(target=target, name=f"quarterpanic-{task.name}", daemon=True)
    worker.start()
    try:
        worker.join()
    except BaseException:
        kill_kernels()
        worker.join(timeout=5)  # its papermill call returns once the kernel is gone
        kill_kernels()  # one that was still starting
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _drain(starts: Any, on_event: EventHandler) -> None:
    # A start still in the queue is reported before its own finish.
    while True:
        try:
            on_event(Event("start", starts.get_nowait()))
        except (queue.Empty, ValueError, OSError):
            return


def _result_or_crash(future: Any, task: NotebookTask) -> NotebookResult:
    try:
        return future.result()
    except Exception as err:  # the worker itself died (out of memory, killed)
        return NotebookResult(
            name=task.name,
            status=STATUS_ERROR,
            started_at=utc_now(),
            duration_s=0.0,
            error={"cell_index": None, "execution_count": None, "ename": type(err).__name__, "evalue": _short(err)},
        )


class DaskExecutor:
    """Notebooks as tasks on a Dask ``distributed`` cluster (``client.submit`` per notebook).

    Workers must share the output folder's file system and have quarterpanic
    installed. Without a ``scheduler`` address a :class:`distributed.LocalCluster`
    with ``jobs`` single-threaded worker processes is started for the run.
    Starts are reported at submission (the scheduler decides when a task runs).
    """

    #: Seconds to keep trying a ``scheduler`` address before the run stops (nothing executed).
    connect_timeout_s: float = 30

    def __init__(self, scheduler: str | None = None, *, jobs: int = 1, client: Any = None):
        if jobs < 1:
            raise ParameterError(f"--jobs must be at least 1, got {jobs}")
        self.scheduler = scheduler
        self.jobs = jobs
        self.client = client

    def describe(self) -> dict[str, Any]:
        return {"kind": "dask", "scheduler": self.scheduler or ("client" if self.client else "local cluster"),
                "jobs": self.jobs}

    def execute(self, tasks: Sequence[NotebookTask], on_event: EventHandler) -> list[NotebookResult]:
        # dask.distributed takes seconds to import and only `quarterpanic run --executor dask` uses it.
        from distributed import Client, LocalCluster, as_completed

        if not log.isEnabledFor(logging.INFO):  # distributed logs every worker start at INFO; keep to -v
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.client is not None:
            return self._execute(self.client, tasks, on_event, as_completed)
        if self.scheduler:
            try:
                client = Client(self.scheduler, timeout=self.connect_timeout_s)
            except (OSError, TimeoutError) as err:
                raise RunError(f"cannot reach the Dask scheduler at {self.scheduler}: {err}",
                               hint="check --scheduler") from None
            with client:
                return self._execute(client, tasks, on_event, as_completed)
        with warnings.catch_warnings():
            # Without a dashboard the scheduler still serves HTTP (health checks), on 8787 or, when another
            # cluster has that port, on a free one with a UserWarning that would land in every cron log.
            warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
            cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, dashboard_address=None)
        with cluster, Client(cluster) as client:
            return self._execute(client, tasks, on_event, as_completed)

    def _execute(self, client: Any, tasks: Sequence[NotebookTask], on_event: EventHandler,
                 as_completed: Any) -> list[NotebookResult]:
        futures = {}
        for task in tasks:
            futures[client.submit(run_notebook, task, pure=False, key=f"notebook-{task.run_id}-{task.name}")] = task
            on_event(Event("start", task.name))
        results: dict[str, NotebookResult] = {}
        for future in as_completed(list(futures)):
            task = futures[future]
            result = _result_or_crash(future, task)
            results[task.name] = result
            on_event(Event("finish", task.name, result))
        return [results[task.name] for task in tasks]


# -- progress --------------------------------------------------------------------------------------


class Progress:
    """One line per notebook start and finish on ``stream``; on a terminal also a live status line."""

    def __init__(self, stream: Any = None, *, live: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.live = self._isatty() if live is None else live
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, event: Event) -> None:
        with self.lock:
            self._clear()
            if event.kind == "start":
                self.running[event.name] = time.perf_counter()
                self._line(f"[{event.name}] started")
            else:
                self.running.pop(event.name, None)
                result = event.result
                text = f"[{event.name}] {result.status} in {result.duration_s:.1f}s"
                if result.error:
                    text += f" — {error_summary(result.error)}"
                self._line(text)
            self._status()

    def __enter__(self) -> Progress:
        if self.live:
            self._ticker = threading.Thread(target=self._tick, name="quarterpanic-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join()
        with self.lock:
            self._clear()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                self._clear()
                self._status()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _status(self) -> None:
        if self.live and self.running:
            now = time.perf_counter()
            busy = ", ".join(f"{name} {now - t0:.0f}s" for name, t0 in self.running.items())
            self.stream.write(f"running: {busy}"[:200])
            self.stream.flush()

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")

    def _isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

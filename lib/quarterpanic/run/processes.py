"""The run's child processes, so that a stopped run leaves none behind.

A run starts kernels (one per notebook) and, with ``--jobs N``, a fork server,
worker processes and multiprocessing's resource tracker. None of them notices
on its own that the run was killed: pool workers keep executing their notebook
and write into the run folder, and the fork server and the resource tracker
live as long as the workers. Three pieces stop them:

* :class:`TrackedKernelManager` records every kernel it starts, and
  :func:`kill_kernels` kills the ones still running (their whole process
  group: a kernel is a session leader, and what it started goes with it);
* a *lifeline*: the run keeps the write end of a pipe and every worker watches
  the read end (:func:`watch_lifeline`). When the run ends in any way, even
  ``SIGKILL``, the pipe reaches EOF and the worker kills its kernels and exits;
  then the fork server and the resource tracker, whose last clients are gone,
  exit by themselves;
* :func:`signals_interrupt` turns ``SIGTERM`` (and ``SIGHUP``) into a
  :class:`RunInterrupted` exception like ``SIGINT``'s ``KeyboardInterrupt``,
  so that the executors' clean-up runs before the process exits.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from typing import Any, Iterator

from jupyter_client.manager import AsyncKernelManager

log = logging.getLogger(__name__)

#: Exit status of a worker that found its run gone.
EXIT_RUN_GONE = 70

_kernels: set[subprocess.Popen] = set()
_kernels_lock = threading.Lock()


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal (``SIGINT``, ``SIGTERM``, ``SIGHUP``)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class TrackedKernelManager(AsyncKernelManager):
    """nbclient's default kernel manager, remembering each kernel process so :func:`kill_kernels` can
    stop it, and shutting kernels down without interrupting them first.

    jupyter_client sends ``SIGINT`` to the kernel's process group before every
    shutdown request. A kernel caught inside a message handler then logs
    ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` (or, when a cell
    was still running, a ``ZMQError`` traceback from a reply sent on closed sockets)
    to the run's stderr. A finished notebook's kernel has nothing to interrupt; a
    cell still running (``--cell-timeout``, a stopped run) ends with the shutdown's
    ``SIGTERM`` and ``SIGKILL`` (after ``shutdown_wait_time``) instead.
    """

    async def start_kernel(self, **kw: Any) -> None:
        await super().start_kernel(**kw)
        process = getattr(self.provisioner, "process", None)  # LocalProvisioner's Popen
        if isinstance(process, subprocess.Popen):
            with _kernels_lock:
                _kernels.difference_update({p for p in _kernels if p.poll() is not None})
                _kernels.add(process)

    async def _async_interrupt_kernel(self) -> None:
        # Called only by shutdown_kernel (and restarts, which a run never does); the public
        # interrupt_kernel is bound to jupyter_client's own implementation and still interrupts.
        return None


def kill_kernels(timeout: float = 5.0) -> int:
    """Kill every kernel this process started that still runs, with its process group; returns how many.

    Only unreaped children are signalled (``Popen.poll()`` is None), so a
    recycled process id is never hit.
    """
    with _kernels_lock:
        running = [p for p in _kernels if p.poll() is None]
        _kernels.clear()
    for process in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if hasattr(os, "killpg"):
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            else:
                process.kill()
    for process in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    return len(running)


def watch_lifeline(lifeline: Any) -> None:
    """In a worker: start a thread that, once the run's end of ``lifeline`` is closed, kills
    this worker's kernels and ends the worker (mid-notebook: nothing more is written)."""
    def watch() -> None:
        try:
            lifeline.recv_bytes()  # the run never sends: this returns only by EOF
        except (EOFError, OSError):
            pass
        kill_kernels()
        os._exit(EXIT_RUN_GONE)

    threading.Thread(target=watch, name="quarterpanic-lifeline", daemon=True).start()


@contextlib.contextmanager
def signals_interrupt(signums: tuple[int, ...] = ()) -> Iterator[None]:
    """While inside, ``SIGTERM`` and ``SIGHUP`` (or ``signums``) raise :class:`RunInterrupted`
    in the main thread, as ``SIGINT`` raises ``KeyboardInterrupt``; the previous handlers
    are restored on the way out. Outside the main thread it changes nothing."""
    wanted = signums or tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

"""A stopped run leaves no process behind: kernels, pool workers, fork server and resource tracker all go."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil  # a dependency of ipykernel
import pytest

from helpers import run_cli, sleeping_notebook, write_notebook
from quarterpanic.run.processes import RunInterrupted, signals_interrupt

MARKER = "QUARTERPANIC_TEST_RUN"


def marked(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``MARKER=token`` (every descendant of the run inherits it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(MARKER) == token:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_for(condition, timeout: float, step: float = 0.25):
    """Poll ``condition`` until it returns something truthy or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("signum, jobs", [
    # SIGTERM on --jobs 2 is the case that left orphans; the other signals and --jobs 1 are the sweep around it.
    (signal.SIGTERM, 2),
    pytest.param(signal.SIGINT, 2, marks=pytest.mark.sweep),
    pytest.param(signal.SIGKILL, 2, marks=pytest.mark.sweep),
    pytest.param(signal.SIGTERM, 1, marks=pytest.mark.sweep),
], ids=["sigterm-jobs2", "sigint-jobs2", "sigkill-jobs2", "sigterm-jobs1"])
def test_a_killed_run_leaves_no_process_and_stops_writing(tmp_path, signum, jobs):
    notebooks = [sleeping_notebook(tmp_path / f"0{i}_sleeps.ipynb") for i in (1, 2)]
    out = tmp_path / "reports"
    token = uuid.uuid4().hex
    with (tmp_path / "stderr.txt").open("w") as stderr:
        run = subprocess.Popen(
            [sys.executable, "-m", "quarterpanic.cli", "run", "--jobs", str(jobs),
             "--notebooks", *map(str, notebooks), "--out", str(out), "--run-id", "killed"],
            stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, MARKER: token},
        )
    try:
        def kernels_running():
            return sum("ipykernel" in " ".join(p.cmdline()) for p in marked(token)) >= jobs

        assert wait_for(kernels_running, timeout=180), "the notebooks' kernels never started"
        # What there is to clean up: the run and a kernel, or with a pool also the resource tracker,
        # the fork server and per job a worker and its kernel.
        assert len(marked(token)) >= (2 if jobs == 1 else 3 + 2 * jobs)
        run.send_signal(signum)
        code = run.wait(timeout=60)
        assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 128 + signum)
        left = wait_for(lambda: not marked(token), timeout=30)
        assert left, [" ".join(p.cmdline())[:120] for p in marked(token)]
        before = files_of(out)
        time.sleep(2)
        assert files_of(out) == before  # nothing keeps writing into the run folder
        assert not (out / "killed").exists() and not (out / "latest").exists()
        if signum != signal.SIGKILL:
            stderr_text = (tmp_path / "stderr.txt").read_text()
            assert "interrupted" in stderr_text and ".killed.partial" in stderr_text
    finally:
        run.kill()
        for process in marked(token):  # a failing run of this test must not leave them either
            process.kill()


def test_sigterm_raises_run_interrupted_only_inside_and_the_handler_is_restored():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as caught:
        with signals_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at the next bytecode; this sleep is interrupted
    assert caught.value.exit_code == 143 and isinstance(caught.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_signals_interrupt_changes_nothing_outside_the_main_thread():
    seen = []

    def in_thread():
        with signals_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [before]


# A whole run in a subprocess (15 s): a sweep, so `make test` stays under 5 minutes; CI runs it.
@pytest.mark.slow
@pytest.mark.sweep
def test_kernels_are_shut_down_without_an_interrupt_so_stderr_stays_clean(tmp_path, capfd):
    # jupyter_client interrupts a kernel (SIGINT) before asking it to shut down; a kernel inside a
    # message handler then writes "KeyboardInterrupt caught in kernel." or, with a cell still
    # running (as here, past --cell-timeout), a ZMQError traceback to the run's stderr.
    healthy = write_notebook(tmp_path / "01_healthy.ipynb", [("markdown", "# Healthy"), ("code", "print('fine')")])
    stuck = sleeping_notebook(tmp_path / "05_sleeps.ipynb")
    code, progress = run_cli("--notebooks", str(healthy), str(stuck), "--cell-timeout", "10",
                             "--out", str(tmp_path / "reports"))
    assert code == 1 and "[01_healthy] ok" in progress and "CellTimeoutError" in progress
    kernels_stderr = capfd.readouterr().err  # the kernels write to the run's file descriptor 2
    assert "KeyboardInterrupt caught in kernel" not in kernels_stderr
    assert "[IPKernelApp] ERROR" not in kernels_stderr and "Traceback" not in kernels_stderr

"""Worker processes of a suite (``--workers N``): how they start, and how they end with their runner.

Two rules, each learnt from a hostile input (issue 26):

- **No code from the working folder.** ``python -m`` puts the working folder first on
  ``sys.path``, so a suite run inside a downloaded data folder holding a ``json.py`` ran it
  in every worker. Workers start with ``python -P`` (Python 3.11+; ``PYTHONSAFEPATH=1`` is
  also set for anything they start) or, on 3.10, a bootstrap that drops the path entry before
  anything is imported. ``PYTHONPATH`` and installed packages and entry points work as in
  the runner; a module named with ``--import`` is found where the runner found it, by name
  only (`contdepth.plugins.module_folders`).
- **Workers end with their runner.** A runner killed by SIGTERM or SIGKILL used to leave its
  workers training (and their run folders locked "in use" until they finished). Each worker
  keeps its stdin, a pipe whose other end only the runner holds, open, and a thread ends the
  worker when it reads end-of-file: the kernel closes the runner's end however the runner
  dies, on every platform. On Linux ``prctl(PR_SET_PDEATHSIG)`` also sends SIGTERM at once.
  A killed worker's run resumes from its last checkpoint next time (checkpoints are written
  atomically, and the run lock is released with the process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from ..common.files import open_regular_for_writing
from ..plugins import IMPORT_FOLDERS_ENV, IMPORTS_ENV, module_folders

WORKER_MODULE = "contdepth.experiment.worker"
#: The runner's process id, so that a worker whose runner died before it could watch it ends at once.
RUNNER_ENV = "CONTDEPTH_RUNNER_PID"
_BOOTSTRAP = f"import sys; sys.path.pop(0); import runpy; runpy.run_module({WORKER_MODULE!r}, run_name='__main__')"


def worker_command() -> list[str]:
    """The command line of a worker: the working folder is not on its module path."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", WORKER_MODULE]
    return [sys.executable, "-c", _BOOTSTRAP]  # -c puts "" first; it is dropped before any import


def worker_environment() -> dict[str, str]:
    """The runner's environment, with safe paths, its pid, and where its ``--import`` modules were found."""
    env = dict(os.environ)
    env["PYTHONSAFEPATH"] = "1"
    if "PYTHONPATH" in env:  # an empty entry (``PYTHONPATH=$UNSET:/x``) would put the working folder back
        kept = [entry for entry in env["PYTHONPATH"].split(os.pathsep) if entry]
        if kept:
            env["PYTHONPATH"] = os.pathsep.join(kept)
        else:
            del env["PYTHONPATH"]
    env[RUNNER_ENV] = str(os.getpid())
    names = [m for m in env.get(IMPORTS_ENV, "").split(",") if m]
    env[IMPORT_FOLDERS_ENV] = json.dumps(module_folders(names))
    return env


def start_worker(job: dict, log: Path) -> subprocess.Popen:
    """Start a worker on ``job`` (its JSON is the first line on its stdin), its output into ``log``.

    The stdin pipe stays open: closing it (or dying) is how the runner tells the worker to end.
    """
    with open_regular_for_writing(log, "a worker's log") as out:  # a FIFO there would block open() forever
        process = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                   text=True, env=worker_environment())
    process.stdin.write(json.dumps(job) + "\n")
    process.stdin.flush()
    return process


#: Seconds a terminated worker has to end before it is killed: a worker whose code (a user's
#: ``--import`` module) handles or ignores SIGTERM must not keep its runner waiting forever.
STOP_GRACE_S = 10.0


def stop_workers(processes, grace: float = STOP_GRACE_S) -> None:
    """Terminate ``processes`` (an interruption: their runs resume next time) and wait for them.

    A worker still running ``grace`` seconds after SIGTERM is killed (its run resumes from
    its last checkpoint, which is written atomically).
    """
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        release(process)


def release(process: subprocess.Popen) -> None:
    """Close the runner's end of a finished worker's pipe."""
    try:
        process.stdin.close()
    except (OSError, ValueError):
        pass


# --- the worker's side ------------------------------------------------------------------------------------
def read_job() -> dict:
    """The job: the first line of stdin (read before `end_with_runner` watches the rest of the pipe).

    End-of-file instead of a job: the runner died before it wrote one; the worker ends.
    """
    line = sys.stdin.readline()
    if not line:
        os._exit(128 + signal.SIGTERM)
    return json.loads(line)


def end_with_runner() -> None:
    """End this worker when its runner dies, however it dies (see the module docstring); after `read_job`."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the pipe below still ends the worker
    runner = os.environ.get(RUNNER_ENV, "")
    if runner.isdigit() and os.getppid() != int(runner):  # the runner died before the watch began
        os._exit(128 + signal.SIGTERM)

    def watch() -> None:
        try:
            while os.read(0, 4096):  # the runner never writes more: only end-of-file returns empty
                pass
        except OSError:
            pass
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="contdepth-runner-watch", daemon=True).start()


__all__ = ["STOP_GRACE_S", "end_with_runner", "read_job", "release", "start_worker", "stop_workers", "worker_command",
           "worker_environment"]

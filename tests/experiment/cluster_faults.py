"""A plugin for test_backends.py, imported by a suite's workers (``--import cluster_faults``): faults in a job.

Armed by ``faults.json`` beside the suite's folder: ``{"mode": "kill" | "config_error", "run": "rk4/seed-0",
"pid": PID}``. ``kill``: that run's process SIGKILLs itself after its first epoch (its checkpoint
written), once (it leaves ``killed`` beside the folder); ``config_error``: that run raises a
``ConfigError`` before it trains. Never in the process ``pid`` (the test's own), never unarmed.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import contdepth.experiment.job as runner  # where a job calls train
from contdepth.train.config import ConfigError

_train = runner.train


def _faults(out: str) -> dict | None:
    beside = Path(out).parents[3]  # DIR/runs/ARM/seed-S -> the folder holding DIR
    try:
        faults = json.loads((beside / "faults.json").read_text())
    except (OSError, ValueError):
        return None
    if faults.get("pid") == os.getpid() or not Path(out).as_posix().endswith("/runs/" + faults.get("run", "?")):
        return None
    return {**faults, "beside": beside}


def train(config, callbacks=()):
    faults = _faults(str(config.out))
    if faults and faults["mode"] == "config_error":
        raise ConfigError("model_options: refused by the test plugin cluster_faults")
    if faults and faults["mode"] == "kill":
        killed = faults["beside"] / "killed"

        def kill(row, model, optimizer):
            if row["epoch"] == 1 and not killed.exists():
                killed.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

        callbacks = [*callbacks, kill]
    return _train(config, callbacks=callbacks)


runner.train = train

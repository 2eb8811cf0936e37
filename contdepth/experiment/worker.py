"""``python -m contdepth.experiment.worker``: run one job of a suite (read as JSON on stdin).

Started by [`contdepth.experiment.run_experiment`][contdepth.experiment.run_experiment] with ``workers > 1``; the last line
it prints is the job's result as JSON; an error is its last line and exit status 2.
"""

from __future__ import annotations

import json
import os

from ..plugins import IMPORT_FOLDERS_ENV, IMPORTS_ENV, allow_imports_from, import_modules, load_plugins
from ..train.checkpoint import CheckpointError
from ..train.config import ConfigError
from .process import end_with_runner, read_job
from .folder import Job
from .job import run_job


def main() -> int:
    job = Job(**read_job())
    end_with_runner()  # a runner killed by any signal takes its workers with it
    try:
        # the parent's --import modules (and installed entry points): the job may train a user's model;
        # the working folder is not on this process's path (see contdepth.experiment.process)
        allow_imports_from(json.loads(os.environ.get(IMPORT_FOLDERS_ENV) or "{}"))
        load_plugins()
        import_modules([m for m in os.environ.get(IMPORTS_ENV, "").split(",") if m])
        result = run_job(job)
    except (ConfigError, CheckpointError, OSError) as exc:
        print(f"{exc}", flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

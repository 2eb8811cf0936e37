"""``python -m contdepth.experiment.worker``: run one job of a suite (read as JSON on stdin).

Started by :func:`contdepth.experiment.run_experiment` with ``workers > 1``; the last line
it prints is the job's result as JSON; an error is its last line and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys

from ..plugins import IMPORTS_ENV, import_modules, load_plugins
from ..train.checkpoint import CheckpointError
from ..train.config import ConfigError
from .runner import Job, run_job


def main() -> int:
    job = Job(**json.loads(sys.stdin.read()))
    try:
        # the parent's --import modules (and installed entry points): the job may train a user's model
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

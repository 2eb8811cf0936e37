"""The options only the command line has, as dataclasses whose fields generate the flags.

- `ModelFlags`: the common model options of ``train`` as flags of their own (``--alpha 8``
  for ``--model-option alpha=8``).
- `Analyze`, `Export`, `Suite` (``experiment``), `Report`, `SchemeTable` (``schemes``), `Demo`, `Generate`.

The options shared with the library (`contdepth.train.options`: ``Runtime``, ``Evaluate``,
``Compress``) live below, where an experiment spec reads them too. These classes live at the
command line's level because their checks use the optional parts (analysis, export,
experiment), which ``contdepth --help`` must not import: nothing here imports torch, and a
check imports what it needs when it runs. Where the library function a command calls already
checks an option before any work (``export_run``, ``run_experiment``, ``demo``), the class
leaves the check to it: one set of bounds, in the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..common.errors import OptionError
from ..common.options import option
from ..common.validate import check_int
from ..train.options import DEFAULT_SCHEMES, DEFAULT_STEPS, check_counts, check_scheme

if TYPE_CHECKING:
    from ..analysis import Reference

# Smallest nonzero --rtol/--atol of eval --adaptive. Activations are float32 (unit round-off
# 6e-8): an error estimate much below that is round-off, so a tolerance of 1e-12 is never met
# (the step size shrinks until max_steps, minutes later), and 1e-300 even underflows the error
# scale atol + rtol * |x| to 0 (a NaN step size). 1e-9 is already far below anything useful.
TOLERANCE_FLOOR = 1e-9
#: The smallest adaptive tolerance of ``analyze --reference`` per analysis dtype (float64: unit round-off 1.1e-16).
REFERENCE_FLOOR = {"float32": TOLERANCE_FLOOR, "float64": 1e-14}


def _bases() -> str:
    from ..basis import available_bases  # the names only: no torch

    return f"one of {', '.join(available_bases())}"


@dataclass(frozen=True)
class ModelFlags:
    """``train``'s flags for the model options most runs set; ``--model-option KEY=VALUE`` sets any other.

    Each is a key of ``TrainConfig.model_options`` with the same name; the model checks them
    (``model_options.basis: must be one of ...``), so an option a model does not take is
    refused naming the model.
    """

    alpha: int | None = option(None, help="base width (channels of the first stage)")
    widen: int | None = option(None, help="width multiplier")
    n_basis: tuple[int, ...] | None = option(None, items=(int, "+"),
                                             help="basis functions per block: one value or one per stage")
    basis: str | None = option(None, help="depth basis", listing=_bases)
    scheme: str | None = option(None, help="integration scheme used in training (contdepth schemes lists them)")
    n_steps: tuple[int, ...] | None = option(None, items=(int, "+"),
                                             help="steps per block: one value or one per stage (default n_basis)")
    norm: str | None = option(None, help="normalisation: batch, group, none")


@dataclass(frozen=True)
class Analyze:
    """``contdepth analyze``: convergence and invariance of a run across the manifestations of a grid."""

    schemes: tuple[str, ...] = option(DEFAULT_SCHEMES, metavar="SCHEME", items=(str, "+"),
                                      help="schemes to analyse")
    steps: tuple[int, ...] = option(DEFAULT_STEPS, metavar="N", items=(int, "+"), help="step counts per block")
    reference: str | None = option(None, metavar="REF",
                                   help="rk4:64 (fixed grid), rk4 (4 x the largest step count; the default), "
                                        "dopri5 or dopri5:TOL (adaptive)")
    max_examples: int | None = option(None, metavar="N", help="analyse only the first N test examples")
    dtype: str = option("float64", help="float64 (orders stay above round-off) or float32")
    no_plots: bool = option(False, help="write no PNG plots (no matplotlib needed)")
    tensorboard: str | None = option(None, metavar="DIR",
                                     help="also write the manifestation table and accuracy against steps per scheme "
                                          "to DIR for TensorBoard (e.g. RUN/analysis/tensorboard: not the training's "
                                          "RUN/tensorboard, whose resumed writers purge later steps; needs pip install "
                                          "'contdepth[tb]')")

    def __post_init__(self) -> None:
        from ..analysis.manifestations import DTYPES, check_grid

        try:
            schemes, steps = check_grid(self.schemes, self.steps)
        except ValueError as exc:
            raise OptionError(str(exc)) from exc
        object.__setattr__(self, "schemes", schemes)
        object.__setattr__(self, "steps", check_counts(steps, "steps"))
        if self.dtype not in DTYPES:
            raise OptionError("dtype", f"must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        self.resolved_reference()
        check_int(self.max_examples, "max_examples", low=1, allow_none=True)

    def resolved_reference(self) -> "Reference | None":
        """The ``--reference`` with its step count resolved for ``steps``; ``None``: the analysis's default.

        A fixed grid's step count is bounded as ``--n-steps`` is; an adaptive tolerance must be
        one the analysis dtype can meet (`REFERENCE_FLOOR`).
        """
        from ..analysis import parse_reference

        if self.reference is None:
            return None
        try:
            reference = parse_reference(self.reference)
        except ValueError as exc:
            raise OptionError(str(exc)) from exc
        if not reference.adaptive:
            if reference.n_steps is not None:
                from ..models.layers import check_block_size

                check_block_size(reference.n_steps, "reference n_steps")
        elif reference.rtol < REFERENCE_FLOOR[self.dtype]:
            raise OptionError("reference", f"the tolerance must be >= {REFERENCE_FLOOR[self.dtype]:g} with --dtype "
                                           f"{self.dtype} (a smaller one cannot be met in that precision), got "
                                           f"{reference.rtol:g}")
        return reference.resolved(self.steps)


@dataclass(frozen=True)
class Export:
    """``contdepth export``: one manifestation of a run as a static graph (checked by ``export_run``)."""

    format: str = option("onnx", help="onnx, or torch_export (.pt2 via torch.export.save)")
    scheme: str | None = option(None, metavar="SCHEME",
                                help="manifest with this scheme (default: the trained one; contdepth schemes lists "
                                     "them)")
    n_steps: int | None = option(None, metavar="N", help="steps per block (default: the trained ones)")
    batch_size: int = option(1, metavar="N",
                             help="batch of the example input the graph is traced with (not an evaluation batch: "
                                  "export evaluates nothing); any batch runs unless --static-batch")
    static_batch: bool = option(False, help="fix the batch size to --batch-size (default: dynamic)")
    input_shape: tuple[int, ...] | None = option(None, metavar="DIM", items=(int, "+"),
                                                 help="shape of one input without the batch, e.g. 1 28 28 (default: "
                                                      "the dataset's)")
    check: bool = option(False, help="run the written file on a fresh input; print the max abs difference from torch")
    no_data: bool = option(False, help="do not read the dataset (sidecar without normalisation)")


@dataclass(frozen=True)
class Suite:
    """``contdepth experiment``: every (arm, seed) of a spec, resumable (checked by ``run_experiment``)."""

    spec: str = option(positional=True, metavar="SPEC", help="experiment spec (YAML: base, seeds, arms, comparisons)")
    workers: int = option(1, metavar="N", help="runs trained at once, in separate processes (with --backend ray "
                                                 "or slurm, the engine runs as many as its nodes hold)")
    reuse: tuple[str, ...] = option((), metavar="DIR", repeatable=True,
                                    help="another experiment folder: its finished runs with exactly an arm's config "
                                         "and seed are copied instead of trained (repeatable)")
    no_report: bool = option(False, help="do not write the report at the end")
    backend: str = option("local", choices=("local", "ray", "slurm"),
                          help="where the runs run: local worker processes, a Ray cluster, or Slurm through submitit "
                               "(ray and slurm need pip install 'contdepth[ray]' or 'contdepth[slurm]', and --out on "
                               "storage every node shares)")
    ray_address: str | None = option(None, metavar="ADDRESS", group="Ray (--backend ray)",
                                     help="a running Ray cluster (auto, ray://host:10001); default: start a local Ray")
    ray_retries: int = option(3, metavar="N", group="Ray (--backend ray)",
                              help="times a run whose worker or node died is retried (it resumes from its last "
                                   "checkpoint)")
    slurm_partition: str | None = option(None, metavar="NAME", group="Slurm (--backend slurm)",
                                         help="the partition of every job (default: the cluster's)")
    slurm_time: int = option(60, metavar="MIN", group="Slurm (--backend slurm)",
                             help="minutes a job may run; past it submitit requeues it and the run resumes from its "
                                  "last checkpoint")
    slurm_gpus: int | None = option(None, metavar="N", group="Slurm (--backend slurm)",
                                    help="GPUs per job (default: 1 with --device cuda, else 0)")
    slurm_cpus: int | None = option(None, metavar="N", group="Slurm (--backend slurm)",
                                    help="CPUs per job, all used by its run (default: --threads / --workers)")
    slurm_config: str | None = option(None, metavar="FILE", group="Slurm (--backend slurm)",
                                      help="YAML file whose slurm: section holds further submitit executor "
                                           "parameters (slurm_account, mem_gb, slurm_array_parallelism, ...)")

    def __post_init__(self) -> None:
        given = [f"--{name.replace('_', '-')}" for name, default in (
            ("ray_address", None), ("ray_retries", 3), ("slurm_partition", None), ("slurm_time", 60),
            ("slurm_gpus", None), ("slurm_cpus", None), ("slurm_config", None))
            if getattr(self, name) != default and not name.startswith(self.backend)]
        if given:
            raise OptionError("backend", f"{', '.join(given)} need{'s' * (len(given) == 1)} --backend "
                                         f"{given[0][2:].split('-')[0]}, not {self.backend}")

    def engine(self) -> object:
        """The ``backend`` argument of ``run_experiment``: a name, or the engine's options."""
        from ..experiment.backends import Ray, Slurm

        if self.backend == "ray":
            return Ray(address=self.ray_address, max_retries=self.ray_retries)
        if self.backend == "slurm":
            return Slurm(partition=self.slurm_partition, time=self.slurm_time, gpus=self.slurm_gpus,
                         cpus=self.slurm_cpus, config=self.slurm_config)
        return "local"


@dataclass(frozen=True)
class Report:
    """``contdepth report``: the statistics of an experiment folder."""

    no_plots: bool = option(False, help="skip the PNG plots (no matplotlib needed)")


@dataclass(frozen=True)
class SchemeTable:
    """``contdepth schemes``: every registered scheme's cost, order and stability."""

    lm_k: float = option(-0.05, metavar="K",
                         help="k of the LM-ResNet row (the middle of its initialisation range)")

    def __post_init__(self) -> None:
        if isinstance(self.lm_k, bool) or not isinstance(self.lm_k, (int, float)) or not math.isfinite(self.lm_k) \
                or self.lm_k <= -1:
            raise OptionError("lm_k", f"must be a finite number > -1 (at -1 the scheme loses its u' term), got "
                                      f"{self.lm_k}")


@dataclass(frozen=True)
class Demo:
    """``contdepth demo``: a ContinuousNet trained on digits with refinement (checked by ``demo``)."""

    epochs: int | None = option(None, metavar="N",
                                help="training epochs (default: the demo's own; refinements after the last are "
                                     "dropped)")


@dataclass(frozen=True)
class Generate:
    """``contdepth generate``: bytes sampled after a prompt from a text run's model (bounds: ``check_sampling``)."""

    prompt: str = option(metavar="TEXT", help="the text to continue (its UTF-8 bytes)")
    tokens: int = option(metavar="N", help="bytes to sample, 1 to 1000000")
    temperature: float = option(1.0, metavar="T", help="softmax temperature; 0: always the most likely byte")
    top_k: int | None = option(None, metavar="K", help="sample among the K most likely bytes, 1 to 256 (default: all)")
    seed: int = option(0, metavar="S", help="seed of the sampler: the same seed gives the same text")
    scheme: str | None = option(None, metavar="SCHEME",
                                help="generate with this scheme (a continuous model; default: the trained one; "
                                     "contdepth schemes lists them)")
    n_steps: int | None = option(None, metavar="N", help="steps per block (default: the trained ones)")
    no_cache: bool = option(False, help="recompute every position for each byte instead of caching keys and values "
                                        "(the same text, slower)")

    def __post_init__(self) -> None:
        from ..models.generation import check_sampling
        from ..models.layers import check_block_size

        check_sampling(self.prompt_bytes, self.tokens, self.temperature, self.top_k, self.seed)
        if self.scheme is not None:
            check_scheme(self.scheme, "scheme")
        if self.n_steps is not None:
            check_block_size(self.n_steps, "n_steps")

    @property
    def prompt_bytes(self) -> bytes:
        """The prompt's bytes: UTF-8, with bytes the shell passed undecoded (``surrogateescape``) as they were."""
        if not isinstance(self.prompt, str):
            raise OptionError("prompt", f"expected text, got {type(self.prompt).__name__}")
        try:
            return self.prompt.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise OptionError("prompt", f"is not valid text (a lone surrogate at character {exc.start})") from exc


__all__ = ["REFERENCE_FLOOR", "TOLERANCE_FLOOR", "Analyze", "Demo", "Export", "Generate", "ModelFlags", "Report",
           "SchemeTable", "Suite"]

"""An experiment's specification: a base config, seeds, arms, comparisons and after-training steps.

    name: refinement                 # optional; default: the file's stem
    description: ...                 # optional free text, shown in the report
    base:                            # TrainConfig options shared by every arm
      model: continuousnet
      data: fashion_mnist
      validation_size: 5000          # choose settings on validation, report test
      epochs: 10
    seeds: [0, 1, 2, 3, 4]           # or a rule: {min: 5, max: 20, half_width: 0.5} (SeedRule)
    arms:                            # name -> TrainConfig overrides of the base
      scratch: {model_options: {n_basis: 4}}
      refined: {model_options: {n_basis: 1}, refine_at: [3, 6]}
    comparisons:                     # an arm against a baseline arm, paired by seed
      - {arm: refined, baseline: scratch, target: {flops_ratio_max: 0.6, cpu_time_ratio_max: 0.65, accuracy_diff_low_min: -0.3}}
    evaluate:                        # optional, after training: more manifestations
      schemes: [euler, midpoint, rk4]
      n_steps: [1, 2, 4, 8, 16]
    compress: {n_basis: 2, n_steps: 2, finetune_epochs: 2, latency_batch_sizes: [1, 256]}

An arm that names another ``model`` than the base does not inherit the base's
``model_options``. ``evaluate`` and ``compress`` at the top level apply to every arm; an arm may set its own
or switch one off with ``null``. Each ``(arm, seed)`` is an ordinary run: the arm's config
with ``seed`` set. Everything is validated when the spec is read (every arm's
[`TrainConfig`][contdepth.train.TrainConfig] is built), so a typo in the fifth arm fails before the
first run starts, with a message naming the spec file and the arm.

Where the files are (``data_dir``) and how fast evaluation runs (``eval_batch_size``) are not
part of an experiment's identity, nor are the command line's ``--threads``, ``--device`` and
``--workers``: a suite may be continued on another machine with its files somewhere else.
Everything else is: a changed ``epochs`` is a different experiment.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..analysis import as_continuous
from ..common.errors import OptionError
from ..common.validate import check_int, check_number, check_plain_value, check_seed, show
from ..data import dataset_kind, is_graph_dataset
from ..models import model_options
from ..train.config import ConfigError, TrainConfig, read_yaml
from ..train.options import DEFAULT_SCHEMES, DEFAULT_STEPS, Compress, Evaluate
from ..train.runs import dry_model
from ..train.sizes import final_basis
from ..train.trainer import preflight as train_preflight

from .comparison_spec import MODEL_STAGES, TARGET_KEYS, Comparison, parse_comparison  # noqa: F401  (re-exported)

SPEC_KEYS = ("name", "description", "base", "seeds", "arms", "comparisons", "evaluate", "compress")
# Options an experiment sets itself, per run or per sitting: a spec may not.
RUN_OPTIONS = ("seed", "out", "resume", "overwrite", "extend", "quiet", "threads", "device")
# Options a spec may hold that do not change what is measured: not part of its identity.
SITTING_OPTIONS = ("data_dir", "eval_batch_size")
IDENTITY_VERSION = 2
# Used with fullmatch: with match, "$" also matches before a final newline, and "a\n" named a folder.
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
EVALUATE_KEYS = ("schemes", "n_steps", "splits", "examples")
COMPRESS_KEYS = ("n_basis", "n_steps", "finetune_epochs", "lr", "latency_batch_sizes", "latency_repeats", "onnx")
MAX_SEEDS = 1000
SEED_RULE_KEYS = ("min", "max", "half_width")
MAX_ARMS = 100


@dataclass(frozen=True)
class SeedRule:
    """``seeds: {min, max, half_width}``: seeds 0, 1, ... added in order until every comparison's paired
    accuracy interval has at most ``half_width`` points on each side, from ``min`` seeds up to ``max``.

    Why a rule in the spec: how many seeds a claim needs depends on a spread not known before
    the runs, and choosing the number after looking at the results is a choice on them. The
    rule is fixed before the first run and decided from the finished runs alone
    (`contdepth.experiment.seeds`), so it is part of the experiment's identity.
    """

    min: int
    max: int
    half_width: float

    def to_dict(self) -> dict:
        return {"min": self.min, "max": self.max, "half_width": self.half_width}


@dataclass(frozen=True)
class Arm:
    """One named setting: the overrides of the base and its after-training steps."""

    name: str
    overrides: dict
    evaluate: Evaluate | None = None
    compress: Compress | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment (see the module docstring for the file format)."""

    name: str
    base: dict
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    comparisons: tuple[Comparison, ...] = ()
    description: str = ""
    source: str = "spec"
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    # ``seeds`` is then 0..max-1, the seeds the rule may ask for, in the order it asks
    seed_rule: SeedRule | None = None

    # --- reading -----------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "ExperimentSpec":
        path = Path(path)
        values = read_yaml(path, "an experiment spec")
        return cls.from_dict(values, source=str(path), default_name=path.stem)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "spec", default_name: str = "experiment"
                  ) -> "ExperimentSpec":
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: an experiment spec is a mapping with keys {', '.join(SPEC_KEYS)}")
        try:  # JSON-like values only: the suite's record is JSON, its spec YAML
            check_plain_value(values, "")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        unknown = sorted(set(map(str, values)) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"{source}: {unknown[0]}: not a key of an experiment spec; allowed: {', '.join(SPEC_KEYS)}")
        name = values.get("name", default_name)
        if not isinstance(name, str) or not ARM_NAME.fullmatch(name):  # fullmatch: '$' would let 'a\n' through
            raise ConfigError(f"{source}: name: must be letters, digits, '_', '-' or '.', got {show(name)}")
        description = values.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"{source}: description: must be text, got {type(description).__name__}")
        base_raw = values.get("base")
        if base_raw is not None and not isinstance(base_raw, Mapping):
            raise ConfigError(f"{source}: base: must be a mapping of TrainConfig options, got {type(base_raw).__name__}")
        base = _options(base_raw or {}, f"{source}: base")
        try:
            TrainConfig.from_sources(None, base)
        except ConfigError as exc:
            raise ConfigError(f"{source}: base: {exc}") from exc
        seeds, seed_rule = _seeds(values.get("seeds"), source)
        arms_raw = values.get("arms")
        if not isinstance(arms_raw, Mapping) or not arms_raw:
            raise ConfigError(f"{source}: arms: must map arm names to option overrides (at least one arm)")
        if len(arms_raw) > MAX_ARMS:
            raise ConfigError(f"{source}: arms: at most {MAX_ARMS}, got {len(arms_raw)}")
        default_eval = _evaluate(values.get("evaluate"), f"{source}: evaluate")
        default_compress = _compress(values.get("compress"), f"{source}: compress")
        arms = []
        folded: dict[str, str] = {}
        for arm_name, body in arms_raw.items():
            where = f"{source}: arms.{arm_name}"
            if not isinstance(arm_name, str) or not ARM_NAME.fullmatch(arm_name):
                raise ConfigError(f"{source}: arms: {show(arm_name)} is not a usable arm name (letters, digits, '_', '-', "
                                  "'.'; it names a folder)")
            if arm_name.casefold() in folded:  # one folder on a case-insensitive file system
                raise ConfigError(f"{source}: arms: {arm_name!r} and {folded[arm_name.casefold()]!r} differ only in "
                                  "case; arm names name folders, so they must differ in more than that")
            folded[arm_name.casefold()] = arm_name
            if body is not None and not isinstance(body, Mapping):
                raise ConfigError(f"{where}: must be a mapping of option overrides (or empty), got "
                                  f"{type(body).__name__}")
            body = dict(body or {})
            evaluate = _evaluate(body.pop("evaluate"), f"{where}.evaluate") if "evaluate" in body else default_eval
            compress = _compress(body.pop("compress"), f"{where}.compress") if "compress" in body else default_compress
            overrides = _options(body, where)
            config = arm_config(base, Arm(arm_name, overrides), seeds[0], where)
            if evaluate is not None:
                evaluate = _evaluable(config, evaluate, f"{where}.evaluate")
            if compress is not None:
                _check_compressible(config, compress, where)
            arms.append(Arm(arm_name, overrides, evaluate, compress))
        comparisons_raw = values.get("comparisons")
        if comparisons_raw is not None and not isinstance(comparisons_raw, list):
            raise ConfigError(f"{source}: comparisons: must be a list of {{arm: A, baseline: B}}, got "
                              f"{type(comparisons_raw).__name__}")
        comparisons = tuple(parse_comparison(c, {a.name: a for a in arms}, f"{source}: comparisons[{i}]")
                            for i, c in enumerate(comparisons_raw or []))
        if seed_rule is not None and not comparisons:
            raise ConfigError(f"{source}: seeds: the rule {{min, max, half_width}} stops on the comparisons' accuracy "
                              "intervals, and the spec has none; add a comparison or list the seeds")
        return cls(name=name, base=base, seeds=seeds, arms=tuple(arms), comparisons=comparisons,
                   description=description, source=source, raw=dict(values), seed_rule=seed_rule)

    # --- use ---------------------------------------------------------------------------------
    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def config(self, arm: Arm | str, seed: int, **run: Any) -> TrainConfig:
        """The [`TrainConfig`][contdepth.train.TrainConfig] of ``(arm, seed)``, with run options such as ``out`` and ``threads``."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        return arm_config(self.base, arm, seed, f"{self.source}: arms.{arm.name}", run)

    def preflight(self, **run: Any) -> None:
        """Every arm's run checked as ``contdepth train`` checks one before any work, with the run options ``run``.

        The model is built on the ``meta`` device for each arm (its options' values, every
        refinement's sizes, the memory its weights need), so a spec that cannot run is
        refused before an experiment folder is made, not after its first runs. The run
        folders are checked when each run starts. The first seed stands for all: a seed
        changes no size.
        """
        for arm in self.arms:
            config = self.config(arm, self.seeds[0], **run)
            try:
                train_preflight(config, folder=False)
            except ConfigError as exc:
                raise ConfigError(f"{self.source}: arms.{arm.name}: {exc}") from exc

    def identity(self) -> dict:
        """What must not change for an existing experiment folder: everything but `SITTING_OPTIONS`."""
        def strip(options: dict) -> dict:
            return {k: v for k, v in sorted(options.items()) if k not in SITTING_OPTIONS}

        return {
            "name": self.name,
            "base": strip(self.base),
            "seeds": self.seed_rule.to_dict() if self.seed_rule is not None else list(self.seeds),
            "arms": {a.name: {"options": strip(a.overrides),
                              "evaluate": a.evaluate.to_dict() if a.evaluate else None,
                              "compress": a.compress.to_dict() if a.compress else None} for a in self.arms},
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def arm_config(base: dict, arm: Arm, seed: int, where: str, run: Mapping[str, Any] | None = None) -> TrainConfig:
    """Base, then the arm's overrides, then the run options.

    ``model_options`` and ``data_options`` are merged key by key (an arm that sets ``scheme``
    keeps the base's ``alpha``), except that an arm naming another ``model`` than the base
    starts from that model's defaults: options of one model mean nothing to another.
    """
    try:
        config = TrainConfig.from_sources(None, base) if base else TrainConfig()
        if arm.overrides.get("model", config.model) != config.model:
            config = config.replace(model=arm.overrides["model"], model_options={})
        config = TrainConfig.from_sources(None, arm.overrides, base=config) if arm.overrides else config
        return config.replace(**{"seed": seed, "quiet": True, **(run or {})})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def difference(old: Any, new: Any, path: str = "") -> list[str]:
    """Readable differences between two identities: ``arms.b.options.lr: 0.1 -> 0.05``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{where}: added ({show(new[key])})")
            elif key not in new:
                out.append(f"{where}: removed (was {show(old[key])})")
            else:
                out.extend(difference(old[key], new[key], where))
        return out
    return [] if old == new else [f"{path}: {show(old)} -> {show(new)}"]


def _options(values: Any, where: str) -> dict:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: must be a mapping of TrainConfig options, got {type(values).__name__}")
    options = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(options) - set(TrainConfig.option_names()))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: not an option; allowed: "
                          f"{', '.join(n for n in TrainConfig.option_names() if n not in RUN_OPTIONS)}")
    reserved = sorted(set(options) & set(RUN_OPTIONS))
    if reserved:
        raise ConfigError(f"{where}: {reserved[0]}: set by the experiment per run or sitting (seeds come from "
                          "'seeds'; threads and device from the command line), not in a spec")
    return options


def _seeds(values: Any, source: str) -> tuple[tuple[int, ...], SeedRule | None]:
    """The listed seeds, or for a rule the seeds it may ask for (0..max-1) and the rule."""
    if isinstance(values, Mapping):
        rule = _seed_rule(values, f"{source}: seeds")
        return tuple(range(rule.max)), rule
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{source}: seeds: must be a non-empty list of integers, e.g. [0, 1, 2, 3, 4], or a rule "
                          "{min: 5, max: 20, half_width: 0.5}")
    if len(values) > MAX_SEEDS:
        raise ConfigError(f"{source}: seeds: at most {MAX_SEEDS}, got {len(values)}")
    for i, s in enumerate(values):
        check_seed(s, f"{source}: seeds[{i}]")
    if len(set(values)) != len(values):
        raise ConfigError(f"{source}: seeds: repeated seed in {values}")
    return tuple(values), None


def _seed_rule(values: Mapping, where: str) -> SeedRule:
    unknown = sorted(set(map(str, values)) - set(SEED_RULE_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: not a key of the seeds rule; allowed: {', '.join(SEED_RULE_KEYS)}")
    for key in SEED_RULE_KEYS:
        if key not in values:
            raise ConfigError(f"{where}.{key}: required (the rule is {{min: 5, max: 20, half_width: 0.5}}: "
                              "half_width in accuracy points)")
    low = check_int(values["min"], f"{where}.min", low=1, high=MAX_SEEDS)
    high = check_int(values["max"], f"{where}.max", low=1, high=MAX_SEEDS)
    if low > high:
        raise ConfigError(f"{where}.min: must be at most seeds.max ({high}), got {low}")
    half = check_number(values["half_width"], f"{where}.half_width", low=0, low_open=True)
    return SeedRule(low, high, half)


def _evaluate(values: Any, where: str) -> Evaluate | None:
    """The ``evaluate`` step: the grid's bounds are `Evaluate`'s (``contdepth eval`` has the same)."""
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: must be a mapping with keys {', '.join(EVALUATE_KEYS)}, or null")
    unknown = sorted(set(values) - set(EVALUATE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: not a key; allowed: {', '.join(EVALUATE_KEYS)}")
    try:
        step = Evaluate(schemes=values.get("schemes", list(DEFAULT_SCHEMES)),
                        steps=values.get("n_steps", list(DEFAULT_STEPS)), splits=values.get("splits"),
                        examples=values.get("examples"))
    except OptionError as exc:  # the spec's key for the grid's steps is n_steps
        raise (exc.renamed("n_steps") if exc.option == "steps" else exc).within(where) from None
    return dataclasses.replace(step, schemes=tuple(dict.fromkeys(step.schemes)), steps=tuple(sorted(set(step.steps))),
                               splits=tuple(dict.fromkeys(step.splits)) if step.splits is not None else None)


def _evaluable(config: TrainConfig, evaluate: Evaluate, where: str) -> Evaluate:
    """``evaluate`` with its splits resolved for ``config``; refused where it cannot run."""
    if is_graph_dataset(config.data):
        raise ConfigError(f"{where}: manifestation grids are for image models; {config.data!r} is a graph dataset "
                          "(use contdepth analyze on its runs)")
    try:
        as_continuous(dry_model(config))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    # a text run's validation split is its own (data_options val_fraction, 0.05 unless set to 0)
    has_val = bool(config.validation_size) if dataset_kind(config.data) != "text" else \
        config.data_options.get("val_fraction", 0.05) > 0
    if not evaluate.splits:
        splits = ("val", "test") if has_val else ("test",)
    elif "val" in evaluate.splits and not has_val:
        raise ConfigError(f"{where}.splits: 'val' needs a validation split; set validation_size (e.g. 5000), or for "
                          "text data_options val_fraction > 0")
    else:
        splits = evaluate.splits
    return dataclasses.replace(evaluate, splits=splits)


def _compress(values: Any, where: str) -> Compress | None:
    """The ``compress`` step: its bounds are `Compress`'s (``contdepth compress`` has the same)."""
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: must be a mapping with keys {', '.join(COMPRESS_KEYS)}, or null")
    unknown = sorted(set(values) - set(COMPRESS_KEYS))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: not a key; allowed: {', '.join(COMPRESS_KEYS)}")
    if "n_basis" not in values:
        raise ConfigError(f"{where}.n_basis: required (basis functions per block after projection)")
    try:
        return Compress(**values)
    except OptionError as exc:
        raise exc.within(where) from None


def _check_compressible(config: TrainConfig, compress: Compress, where: str) -> None:
    """The arm's model has blocks to project, each with at least ``compress.n_basis`` functions once trained.

    Why here: compression refuses a basis larger than the block's (that would not compress), and
    that refusal came after the run had trained; the sizes after every refinement of ``refine_at``
    are known from the model built on the ``meta`` device, before any run starts.
    """
    from ..nn import continuous_blocks

    if "n_basis" not in model_options(config.model):
        raise ConfigError(f"{where}.compress: model {config.model!r} has no ContinuousBlock to project; "
                          "switch compress off for this arm (compress: null)")
    try:
        model = dry_model(config)
    except (ValueError, TypeError, RuntimeError):  # bad option values: the preflight names the option
        return
    blocks = continuous_blocks(model)
    wanted = compress.n_basis if isinstance(compress.n_basis, tuple) else (compress.n_basis,) * len(blocks)
    for key in ("n_basis", "n_steps"):  # a per-block list of the wrong length fails here, not after training
        value = getattr(compress, key)
        if isinstance(value, tuple) and len(value) != len(blocks):
            raise ConfigError(f"{where}.compress.{key}: give one value or one per block ({len(blocks)}), got "
                              f"{list(value)}")
    for index, (block, n_basis) in enumerate(zip(blocks, wanted)):
        basis = final_basis(block.basis, config.refine_at)
        if n_basis > basis.n:
            after = f" after the refinements at epochs {list(config.refine_at)}" if config.refine_at else ""
            raise ConfigError(f"{where}.compress.n_basis: block {index + 1} has {basis.n} basis functions{after}; "
                              f"compression projects onto fewer (at most {basis.n}), got {n_basis}")


__all__ = ["MODEL_STAGES", "Arm", "Comparison", "Compress", "Evaluate", "ExperimentSpec", "SeedRule", "arm_config", "difference"]

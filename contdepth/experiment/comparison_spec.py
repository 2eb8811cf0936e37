"""A spec's comparisons: an arm against a baseline, paired by seed, the models read and the targets.

Its own module because a comparison is its own small language (which model of each side, which
targets, which combinations are refused) that the spec only reads; `contdepth.experiment.spec`
imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..common.validate import check_number, show
from ..train.config import ConfigError

# The models a comparison may read from a run: the trained one, or the compress step's.
MODEL_STAGES = ("trained", "projected", "fine_tuned")
# What a comparison's difference is read in: accuracy (points, higher is better) or loss (nats, per byte for
# text; lower is better). Each has its own targets; the cost targets hold for both.
METRICS = ("accuracy", "loss")
COST_TARGET_KEYS = ("flops_ratio_max", "cpu_time_ratio_max", "time_ratio_max")
ACCURACY_TARGET_KEYS = ("accuracy_diff_min", "accuracy_diff_low_min")
LOSS_TARGET_KEYS = ("loss_diff_max", "loss_diff_high_max", "loss_abs_diff_max")
# Read on the runs' validation loss per row (`contdepth.experiment.flops_to_target`): loss comparisons only.
FLOPS_TO_TARGET_KEY = "flops_to_target_ratio_max"
TARGET_KEYS = ("flops_ratio_max", "cpu_time_ratio_max", "accuracy_diff_min", "accuracy_diff_low_min",
               "time_ratio_max",  # specs written before issue 27; read as cpu_time_ratio_max
               *LOSS_TARGET_KEYS, FLOPS_TO_TARGET_KEY)


@dataclass(frozen=True)
class Comparison:
    """``arm`` against ``baseline``, paired by seed; ``target`` holds the claim's thresholds (optional).

    Targets: ``flops_ratio_max`` (the training steps' FLOP ratio, on every seed, at most this),
    ``cpu_time_ratio_max`` (the geometric mean of the training CPU-time ratios at most this),
    ``accuracy_diff_min`` (mean paired accuracy difference in points at least this),
    ``accuracy_diff_low_min`` (the lower end of its 95 % interval at least this). With
    ``metric="loss"`` the difference is of the final ``test_loss`` / ``val_loss`` (nats; per byte
    for text, lower is better) and its targets are ``loss_diff_max`` (the mean difference at most
    this), ``loss_diff_high_max`` (the upper end of its 95 % interval at most this) and
    ``loss_abs_diff_max`` (both ends of the interval within ± this: equivalence); accuracy targets
    are refused there, and loss targets on an accuracy comparison. ``flops_to_target_ratio_max``
    (loss only): every seed's arm reaches the baseline's final validation loss, and the geometric mean
    of its FLOPs to get there over the baseline's training FLOPs is at most this. No target reads wall time.
    ``time_ratio_max``, from specs written before the others existed, is kept as written (a
    suite's stored spec must still read back) and read as ``cpu_time_ratio_max``
    (`contdepth.experiment.comparisons`).
    """

    arm: str
    baseline: str
    target: dict = field(default_factory=dict)
    # Which model of each side: the trained run, or its compressed model projected or fine-tuned
    # (the arm's ``compress`` step; `contdepth.experiment.model_stages`). Accuracy only: cost ratios
    # compare training runs.
    arm_model: str = "trained"
    baseline_model: str = "trained"
    metric: str = "accuracy"

    @property
    def label(self) -> str:
        """``"arm vs baseline"``, each side's model named where it is not the trained run."""
        def side(name: str, model: str) -> str:
            return name if model == "trained" else f"{name} ({model.replace('_', '-')})"
        return f"{side(self.arm, self.arm_model)} vs {side(self.baseline, self.baseline_model)}"

    @property
    def trained_only(self) -> bool:
        return self.arm_model == self.baseline_model == "trained"

    def to_dict(self) -> dict:
        out = {"arm": self.arm, "baseline": self.baseline, "target": dict(sorted(self.target.items()))}
        if not self.trained_only:  # written only when used: the identity of older specs is unchanged
            out.update(arm_model=self.arm_model, baseline_model=self.baseline_model)
        if self.metric != "accuracy":  # the same: a spec without metric keeps its identity
            out["metric"] = self.metric
        return out


def parse_comparison(values: Any, arms: Mapping[str, Any], where: str) -> Comparison:
    """``{arm, baseline, target, arm_model, baseline_model, metric}`` (or ``[arm, baseline]``) of a spec, checked
    against its ``arms`` (name -> arm with ``compress``); every problem one line naming ``where``."""
    keys = {"arm", "baseline", "target", "arm_model", "baseline_model", "metric"}
    if isinstance(values, list) and len(values) == 2:
        values = {"arm": values[0], "baseline": values[1]}
    if not isinstance(values, Mapping) or set(values) - keys or not {"arm", "baseline"} <= set(values):
        raise ConfigError(f"{where}: must be {{arm: A, baseline: B, target: {{...}}}} (target, arm_model and "
                          "baseline_model optional) or [A, B]")
    for key in ("arm", "baseline"):
        if not isinstance(values[key], str) or values[key] not in arms:
            raise ConfigError(f"{where}.{key}: {values[key]!r} is not an arm; arms: {', '.join(sorted(arms))}")
    models = {}
    for side in ("arm", "baseline"):
        key = f"{side}_model"
        model = values.get(key, "trained")
        if not isinstance(model, str) or model not in MODEL_STAGES:
            raise ConfigError(f"{where}.{key}: must be one of {', '.join(MODEL_STAGES)}, got {show(model)}")
        compress = arms[values[side]].compress
        if model != "trained" and compress is None:
            raise ConfigError(f"{where}.{key}: {model} names the compressed model, and arm {values[side]!r} has no "
                              "compress step")
        if model == "fine_tuned" and not compress.finetune_epochs:
            raise ConfigError(f"{where}.{key}: arm {values[side]!r} compresses with finetune_epochs 0: it has no "
                              "fine-tuned model (use projected)")
        models[key] = model
    metric = values.get("metric", "accuracy")
    if not isinstance(metric, str) or metric not in METRICS:
        raise ConfigError(f"{where}.metric: must be one of {', '.join(METRICS)}, got {show(metric)}")
    if metric == "loss" and set(models.values()) != {"trained"}:
        raise ConfigError(f"{where}.metric: loss compares training runs' final losses; a compressed model's record "
                          "holds accuracies only (use metric: accuracy)")
    if values["arm"] == values["baseline"] and models["arm_model"] == models["baseline_model"]:
        raise ConfigError(f"{where}: compares arm {values['arm']!r} with itself")
    target = values.get("target") or {}
    if not isinstance(target, Mapping) or set(target) - set(TARGET_KEYS):
        raise ConfigError(f"{where}.target: keys must be among {', '.join(TARGET_KEYS)}, got {show(target)}")
    for key, value in target.items():
        check_number(value, f"{where}.target.{key}")
        if metric == "loss" and key in ACCURACY_TARGET_KEYS:
            raise ConfigError(f"{where}.target.{key}: an accuracy target, and this comparison has metric: loss; its "
                              f"targets: {', '.join(LOSS_TARGET_KEYS)}")
        if metric == "accuracy" and key == FLOPS_TO_TARGET_KEY:
            raise ConfigError(f"{where}.target.{key}: reads the validation loss of each row, and this comparison "
                              "reads accuracy; give metric: loss")
        if metric == "accuracy" and key in LOSS_TARGET_KEYS:
            raise ConfigError(f"{where}.target.{key}: a loss target, and this comparison reads accuracy; give "
                              "metric: loss")
        if key == "loss_abs_diff_max" and value <= 0:
            raise ConfigError(f"{where}.target.{key}: an interval lies within ± a bound > 0, so {value!r} can never "
                              "be met")
        if key.endswith("_ratio_max") and value <= 0:
            raise ConfigError(f"{where}.target.{key}: a ratio is > 0, so a maximum of {value!r} can never be met")
        if key.endswith("_ratio_max") and set(models.values()) != {"trained"}:
            raise ConfigError(f"{where}.target.{key}: cost ratios compare training runs; a comparison of a "
                              "compressed model has accuracy targets only")
    if "time_ratio_max" in target and "cpu_time_ratio_max" in target:
        raise ConfigError(f"{where}.target: time_ratio_max is the old name of cpu_time_ratio_max (read as the "
                          "training CPU-time ratio); give only cpu_time_ratio_max")
    return Comparison(values["arm"], values["baseline"], {k: float(v) for k, v in target.items()}, **models,
                      metric=metric)


__all__ = ["ACCURACY_TARGET_KEYS", "COST_TARGET_KEYS", "FLOPS_TO_TARGET_KEY", "LOSS_TARGET_KEYS", "METRICS",
           "MODEL_STAGES", "TARGET_KEYS", "Comparison", "parse_comparison"]

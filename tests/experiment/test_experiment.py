"""The experiment runner: a tiny digits suite end to end, interrupted and resumed, and its statistics."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import contdepth as cd
from contdepth.cli import main
from contdepth.data import hold_out, load
from contdepth.experiment import ExperimentSpec, estimate, run_experiment, summarize, t_quantile
from contdepth.experiment.folder import STEPS_REVISION, run_folder, steps_file, steps_version
from contdepth.train import ConfigError, read_checkpoint
from helpers import REPO_ROOT, write_yaml

SPEC = {
    "name": "tiny",
    "description": "two arms on digits",
    "base": {"model": "continuousnet", "model_options": {"alpha": 4, "n_basis": 1}, "data": "digits",
             "validation_size": 300, "train_size": 600, "epochs": 2, "batch_size": 64, "eval_batch_size": 1000},
    "seeds": [0, 1],
    "arms": {"euler": {"compress": {"n_basis": 1, "finetune_epochs": 1, "latency_batch_sizes": [1],
                                    "latency_repeats": 2}},
             "rk4": {"model_options": {"scheme": "rk4"}, "refine_at": [2]}},
    "comparisons": [{"arm": "rk4", "baseline": "euler", "target": {"time_ratio_max": 0.5}}],
    "evaluate": {"schemes": ["euler", "midpoint", "rk4"], "n_steps": [1, 2], "examples": 150},
}


def write_spec(folder: Path, spec: dict = SPEC, name: str = "tiny.yaml") -> Path:
    return write_yaml(folder, name, spec)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted suite: its folder and summary."""
    folder = tmp_path_factory.mktemp("suite")
    spec = write_spec(folder)
    summary = run_experiment(spec, folder / "out", threads=1, quiet=True)
    return folder / "out", summary


# --- statistics ----------------------------------------------------------------------------------------
def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 29, 500):
        for p in (0.975, 0.995, 0.6, 0.05):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-10, abs=1e-12)


def test_estimate_is_the_t_interval_by_hand():
    values = [0.4, -0.1, 0.3, 0.25, -0.05]
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4}
    e = estimate(values)
    assert (e.n, e.mean, e.std) == (5, pytest.approx(mean), pytest.approx(sd))
    assert e.interval == (pytest.approx(mean - half), pytest.approx(mean + half))
    stats = pytest.importorskip("scipy.stats")
    low, high = stats.t.interval(0.95, 4, loc=mean, scale=stats.sem(values))
    assert e.interval == (pytest.approx(low), pytest.approx(high))


def test_estimate_of_one_or_no_value_has_no_interval():
    assert math.isnan(estimate([1.0]).std) and math.isnan(estimate([1.0]).low) and estimate([1.0]).mean == 1.0
    assert estimate([]).n == 0 and math.isnan(estimate([]).mean)


# --- the validation split --------------------------------------------------------------------------------
def test_hold_out_is_seeded_disjoint_and_nested():
    data = load("digits", seed=0)
    a = hold_out(data, 200, seed=3, train_size=500)
    b = hold_out(data, 200, seed=3, train_size=500)
    assert a.num_val == 200 and a.num_train == 500 and a.num_test == data.num_test
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    rows = {tuple(r.flatten().tolist()) for r in data.train_x}
    assert len(rows) == data.num_train  # digits has no duplicate images, so rows identify them
    val = {tuple(r.flatten().tolist()) for r in a.val_x}
    train = {tuple(r.flatten().tolist()) for r in a.train_x}
    assert not val & train and val | train <= rows
    bigger = hold_out(data, 200, seed=3, train_size=800)
    assert train <= {tuple(r.flatten().tolist()) for r in bigger.train_x}  # a bigger subset holds a smaller one
    assert a.mean != data.mean  # statistics of what is trained on, not of the held-out images
    other = hold_out(data, 200, seed=4)
    assert not torch.equal(other.val_x, a.val_x)
    with pytest.raises(ValueError, match="validation_size: .* leaves none"):
        hold_out(data, data.num_train, seed=0)
    with pytest.raises(ValueError, match="train_size: must be in 1..1"):
        hold_out(data, 200, seed=0, train_size=data.num_train)
    with pytest.raises(ValueError, match="split: digits has no validation split"):
        data.batches("val", 10)


# --- the suite -------------------------------------------------------------------------------------------
def test_suite_end_to_end(suite):
    out, summary = suite
    for name in ("report.md", "summary.json", "plots/accuracy_vs_time.png", "plots/accuracy_per_epoch.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == summary
    for arm in ("euler", "rk4"):
        entry = summary["arms"][arm]
        assert entry["n"] == 2 and set(entry) >= {"accuracy_mean", "accuracy_std", "time_mean"}
        accuracies, times = [], []
        for seed in (0, 1):
            info, _ = read_checkpoint(run_folder(out, arm, seed))
            assert info.epoch == 2 and info.train_config().seed == seed
            accuracies.append(100 * info.history[-1]["test_accuracy"])
            times.append(info.history[-1]["total_time"])
            assert "val_accuracy" in info.history[-1]
        assert entry["accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
        assert entry["accuracy_std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / math.sqrt(2))
        assert entry["time_mean"] == pytest.approx(sum(times) / 2)
        assert set(entry["invariance"]["test_accuracy_mean"]) == {"euler", "midpoint", "rk4"}
    (comparison,) = summary["comparisons"]
    assert (comparison["arm"], comparison["baseline"], comparison["n"]) == ("rk4", "euler", 2)
    diffs = [summary["arms"]["rk4"]["per_seed"][s]["accuracy"] - summary["arms"]["euler"]["per_seed"][s]["accuracy"]
             for s in ("0", "1")]
    mean = sum(diffs) / 2
    half = 12.706204736174707 * abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)  # t_{0.975, 1} sd / sqrt(n)
    assert comparison["accuracy_diff_mean"] == pytest.approx(mean)
    assert comparison["accuracy_diff_ci95"] == [pytest.approx(mean - half), pytest.approx(mean + half)]
    ratios = [summary["arms"]["rk4"]["per_seed"][s]["time"] / summary["arms"]["euler"]["per_seed"][s]["time"]
              for s in ("0", "1")]
    assert comparison["time_ratio_mean"] == pytest.approx(math.sqrt(ratios[0] * ratios[1]))  # geometric (issue 27)
    assert comparison["met"] is False  # rk4 with a refinement costs more CPU time than euler, not half
    report = (out / "report.md").read_text()
    assert "| rk4 vs euler | 2 |" in report and "**no**" in report
    # the steps: every manifestation of the grid, on both splits
    record = json.loads(steps_file(out, "euler", 0).read_text())
    assert set(record["manifestations"]["accuracy"]["midpoint"]) == {"1", "2"}
    assert set(record["manifestations"]["accuracy"]["euler"]["2"]) == {"val", "test"}
    assert record["manifestations"]["examples"] == 150
    # the compression step: the projected model, fine-tuned, in its own run folder
    compression = summary["arms"]["euler"]["compression"]
    assert "compression" not in summary["arms"]["rk4"]
    assert compression["n_basis_after"] == [1, 1, 1] and compression["finetune_epochs"] == 1
    reports = [json.loads(steps_file(out, "euler", s).read_text())["compression"] for s in (0, 1)]
    assert compression["finetuned_diff_mean"] == pytest.approx(
        sum(100 * (r["accuracy_after"] - r["accuracy_before"]) for r in reports) / 2)
    from contdepth.nn import continuous_blocks
    from contdepth.train import load_checkpoint

    model, info = load_checkpoint(out / "compressed" / "euler" / "seed-0")
    assert info.epoch == 1 and [b.n_basis for b in continuous_blocks(model)] == [1, 1, 1]
    assert "## Compression" in report
    # issue 27: readouts per seed on validation and test
    for arm in ("euler", "rk4"):
        inv = summary["arms"][arm]["invariance"]
        assert inv["ode_limit"] == "rk4 x 2" and inv["splits"] == ["val", "test"]
        assert set(inv["val_accuracy_mean"]) == {"euler", "midpoint", "rk4"}
        for split in ("val", "test"):
            gap = inv["gap_to_ode"][split]
            records = {s: json.loads(steps_file(out, arm, s).read_text())["manifestations"] for s in (0, 1)}
            by_hand = {str(s): 100 * (r["trained"]["accuracy"][split] - r["accuracy"]["rk4"]["2"][split])
                       for s, r in records.items()}
            assert gap["n"] == 2 and gap["per_seed"] == pytest.approx(by_hand)
            assert gap["mean"] == pytest.approx(sum(by_hand.values()) / 2)
    assert summary["arms"]["euler"]["invariance"]["training_graph"] == "euler x 1"
    assert summary["arms"]["rk4"]["invariance"]["training_graph"] == "rk4 x 2"  # refined at epoch 2: 2 cells
    per_seed = compression["per_seed"]
    assert set(per_seed) == {"0", "1"}
    for s, r in zip(("0", "1"), reports):
        assert per_seed[s]["val_accuracy_after"] == pytest.approx(100 * r["val_accuracy_after"])
        assert per_seed[s]["accuracy_after"] == pytest.approx(100 * r["accuracy_after"])
    projected, tuned = summary["compression_comparisons"]
    assert (tuned["arm"], tuned["baseline"], tuned["n"], tuned["val_accuracy_diff_n"]) == (
        "euler (fine-tuned)", "euler", 2, 2)
    assert tuned["val_accuracy_diff_mean"] == pytest.approx(
        sum(100 * (r["val_accuracy_after"] - r["val_accuracy_before"]) for r in reports) / 2)
    assert projected["accuracy_diff_mean"] == pytest.approx(compression["projected_diff_mean"])
    assert "Gap to the ODE limit" in report and "| euler (fine-tuned) vs euler |" in report


def test_onnx_latency_times_both_models_in_onnx_runtime():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from contdepth.analysis import compress
    from contdepth.experiment.steps import onnx_latency
    from contdepth.models import create

    model = compress(create("continuousnet", in_channels=1, alpha=2, n_basis=4), 1).train()
    timed = onnx_latency({"compressed": model}, (1, 8, 8), (1, 16), repeats=3, threads=1)  # one export: seconds
    assert set(timed) == {"compressed"} and set(timed["compressed"]) == {1, 16}
    assert all(0 < v < 10 for v in timed["compressed"].values()) and model.training  # its mode is restored


def test_interrupted_suite_resumes_to_the_uninterrupted_summary(suite, tmp_path, capsys):
    reference = suite[1]
    spec = write_spec(tmp_path)

    def stop(row, model, optimizer):
        if model.config["options"].get("scheme") == "rk4" and row["epoch"] == 1 and stop.armed:
            raise KeyboardInterrupt  # the suite is killed during its second run's first epoch

    stop.armed = True
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, tmp_path / "out", threads=1, quiet=True, callbacks=[stop])
    assert read_checkpoint(run_folder(tmp_path / "out", "rk4", 0))[0].epoch == 1
    assert not (tmp_path / "out" / "runs" / "euler" / "seed-1").exists()
    stop.armed = False
    summary = run_experiment(spec, tmp_path / "out", threads=1, quiet=False)
    printed = capsys.readouterr().out
    assert "4 runs (2 arms x 2 seeds)" in printed and "1 done, 1 to resume, 2 to do" in printed
    assert "rk4 seed 0, resuming after epoch 1" in printed
    for arm in ("euler", "rk4"):
        for key in ("n", "accuracy_mean", "accuracy_std", "val_accuracy_mean"):
            assert summary["arms"][arm][key] == reference["arms"][arm][key], (arm, key)
    for key in ("accuracy_diff_mean", "accuracy_diff_ci95", "val_accuracy_diff_mean"):
        assert summary["comparisons"][0][key] == reference["comparisons"][0][key]
    # a third sitting has nothing to do
    again = run_experiment(spec, tmp_path / "out", threads=1, quiet=False)
    assert "4 done, 0 to resume, 0 to do" in capsys.readouterr().out
    assert again["arms"]["rk4"]["accuracy_mean"] == reference["arms"]["rk4"]["accuracy_mean"]
    record = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert len(record["sittings"]) == 3


def test_the_report_does_not_say_sharing_leaves_cpu_time_alone(suite):
    """The same run's CPU time moved 21 % between sittings (issue 27): the report says it moves."""
    report = (suite[0] / "report.md").read_text()
    assert "barely change" not in report
    assert "it still moves with them" in report and "firmest between runs of one sitting" in report


def test_a_partial_suite_reports_what_it_rests_on(suite, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(suite[0], out)
    shutil.rmtree(out / "runs" / "rk4" / "seed-1")
    summary = summarize(out)
    assert summary["arms"]["rk4"]["n"] == 1 and summary["arms"]["euler"]["n"] == 2
    assert summary["comparisons"][0]["n"] == 1 and summary["comparisons"][0]["met"] is None
    assert summary["unfinished"] == ["rk4 seed 1: not started"]
    assert main(["report", str(out), "--quiet", "--no-plots"]) == 0
    assert "Not yet counted (1 runs)" in (out / "report.md").read_text()


def test_a_changed_spec_is_refused_naming_the_differences(suite, tmp_path, capsys):
    changed = json.loads(json.dumps(SPEC))
    changed["base"]["lr"] = 0.05
    changed["base"]["epochs"] = 3
    changed["seeds"] = [0, 1, 2]
    path = write_spec(tmp_path, changed)
    out = tmp_path / "out"
    shutil.copytree(suite[0], out)
    code = main(["experiment", str(path), "--out", str(out), "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "base.lr: added (0.05)" in err and "seeds: [0, 1] -> [0, 1, 2]" in err and "base.epochs: 2 -> 3" in err
    # a resumable option (data_dir, threads, device) is not a change of the experiment
    same = json.loads(json.dumps(SPEC))
    same["base"]["eval_batch_size"] = 250
    run_experiment(write_spec(tmp_path, same, "same.yaml"), out, threads=1, quiet=True, report=False)


def test_a_run_folder_of_another_arm_or_stale_steps_are_never_taken_as_this_runs(suite, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(suite[0], out)
    steps = steps_file(out, "euler", 1)
    record = json.loads(steps.read_text())
    record["checkpoint"]["tensors_sha256"] = "0" * 64  # the steps of weights the run no longer has
    steps.write_text(json.dumps(record))
    summary = summarize(out)
    assert summary["arms"]["euler"]["n"] == 1
    assert summary["unfinished"] == ["euler seed 1: trained, after-training steps not done (for these weights, "
                                     "steps and contdepth version)"]
    # steps computed by another contdepth version or steps revision, or carrying none, are not reused either
    record = json.loads(steps_file(out, "euler", 0).read_text())
    assert record["contdepth"] == steps_version() == f"{cd.__version__}+steps.{STEPS_REVISION}"
    for stale in (None, f"{cd.__version__}+steps.{STEPS_REVISION - 1}"):
        record["contdepth"] = stale
        steps_file(out, "euler", 0).write_text(json.dumps(record))
        assert summarize(out)["arms"]["euler"]["n"] == 0
    runs = out / "runs"
    (runs / "euler" / "seed-0").rename(tmp_path / "moved")
    (runs / "rk4" / "seed-0").rename(runs / "euler" / "seed-0")  # another arm's run where euler's should be
    with pytest.raises(ConfigError, match=r"the run in .*euler/seed-0 is not arm 'euler' seed 0 of this spec"):
        run_experiment(out / "spec.yaml", out, threads=1, quiet=True)
    assert "euler seed 0: not counted" in summarize(out)["unfinished"][0]


def test_report_never_writes_into_a_folder_of_the_users(suite, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    assert main(["report", str(suite[0]), "--out", str(mine), "--quiet"]) == 2
    assert "holds no report written by contdepth" in capsys.readouterr().err
    assert (mine / "report.md").read_text() == "my notes"
    assert main(["report", str(suite[0]), "--out", str(tmp_path / "new"), "--quiet", "--no-plots"]) == 0
    assert main(["report", str(suite[0]), "--out", str(tmp_path / "new"), "--quiet", "--no-plots"]) == 0  # its own


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["arms"].update(a=[1, 2]), r"arms\.a: must be a mapping of option overrides"),
    (lambda s: s.update(comparisons=5), r"comparisons: must be a list"),
    (lambda s: s["arms"].update(EULER={}), r"arms: '(EULER|euler)' and '(euler|EULER)' differ only in case"),
    (lambda s: s["arms"].update(lm={"model": "lm_resnet", "model_options": {"alpha": 4}}),
     r"arms\.lm\.evaluate: model: LM-ResNet stages"),
    (lambda s: (s["base"].update(validation_size=0), s["evaluate"].update(splits=["val"])),
     r"evaluate\.splits: 'val' needs a validation split"),
    (lambda s: s["base"].update(lr=-1), r"tiny\.yaml: base: lr: must be > 0"),
    (lambda s: s["arms"]["rk4"].update(lr="fast"), r"tiny\.yaml: arms\.rk4: lr: must be a finite number"),
    (lambda s: s["arms"]["rk4"].update(learning_rate=1), r"arms\.rk4: learning_rate: not an option"),
    (lambda s: s["base"].update(seed=3), r"base: seed: set by the experiment"),
    (lambda s: s.update(seeds=[0, 0]), r"seeds: repeated seed"),
    (lambda s: s.update(seeds=[]), r"seeds: must be a non-empty list"),
    (lambda s: s["comparisons"].append({"arm": "rk5", "baseline": "euler"}), r"comparisons\[1\]\.arm: 'rk5' is not an arm"),
    (lambda s: s["arms"].update({"../x": {}}), r"arms: '\.\./x' is not a usable arm name"),
    (lambda s: s.update(evaluate={"schemes": ["rk9"]}), r"evaluate\.schemes: must be a list of scheme names"),
    (lambda s: s["arms"].update(res={"model": "resnet", "model_options": {"alpha": 4, "n_units": 1},
                                     "compress": {"n_basis": 1}}), r"arms\.res\.compress: model 'resnet' has no"),
    # a basis larger than the trained one: compression refused it only after the run had trained
    (lambda s: s["arms"]["euler"]["compress"].update(n_basis=2),
     r"arms\.euler\.compress\.n_basis: block 1 has 1 basis functions; compression projects onto fewer"),
    (lambda s: s["arms"]["rk4"].update(compress={"n_basis": 3}),
     r"arms\.rk4\.compress\.n_basis: block 1 has 2 basis functions after the refinements at epochs \[2\]"),
    (lambda s: s.update(extra=1), r"extra: not a key of an experiment spec"),
])
def test_bad_specs_are_one_line_errors_naming_the_place(tmp_path, capsys, edit, message):
    spec = json.loads(json.dumps(SPEC))
    edit(spec)
    path = write_spec(tmp_path, spec)
    with pytest.raises(ConfigError, match=message):
        ExperimentSpec.from_yaml(path)
    assert main(["experiment", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_folder_that_is_not_an_experiment_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["experiment", str(write_spec(tmp_path)), "--out", str(out)]) == 2
    assert "holds no experiment.json" in capsys.readouterr().err
    assert main(["report", str(out)]) == 2
    assert "is not an experiment folder" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_workers_train_the_same_runs_in_parallel(tmp_path):
    spec = json.loads(json.dumps(SPEC))
    spec.update(seeds=[5])
    spec["base"]["epochs"] = 1
    spec["arms"]["rk4"].pop("refine_at")
    spec.pop("evaluate")
    path = write_spec(tmp_path, spec)
    one = run_experiment(path, tmp_path / "one", threads=1, quiet=True, report=False)
    two = run_experiment(path, tmp_path / "two", workers=2, threads=2, quiet=True, report=False)
    assert one is None and two is None
    one, two = summarize(tmp_path / "one"), summarize(tmp_path / "two")
    for arm in ("euler", "rk4"):  # one thread per worker: bitwise the one-worker suite
        assert two["arms"][arm]["n"] == 1
        assert two["arms"][arm]["accuracy_mean"] == one["arms"][arm]["accuracy_mean"]
        assert two["arms"][arm]["val_accuracy_mean"] == one["arms"][arm]["val_accuracy_mean"]


# --- the committed specs --------------------------------------------------------------------------------
EXPERIMENTS = REPO_ROOT / "experiments"


def write_tiny_cifar10(folder: Path) -> Path:
    """CIFAR-10's python batches (five train batches of 6 images, a test batch of 10), random pixels."""
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 6) for i in range(1, 6)] + [("test_batch", 10)]:
        content = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return folder


def shrunk(raw: dict) -> dict:
    """The same arms and models for 2 epochs on a few images: every schedule event moved to epoch 2."""
    raw = json.loads(json.dumps(raw))
    raw["seeds"] = raw["seeds"][:1]
    raw["base"].update(epochs=2, validation_size=10, train_size=10, batch_size=10)
    if raw["base"].get("milestones"):
        raw["base"]["milestones"] = [2]
    for arm in raw["arms"].values():
        if arm.get("refine_at"):
            arm["refine_at"] = [2]
    return raw


@pytest.mark.parametrize("name", ["cifar10_222", "cifar10_888"])
def test_cifar10_specs_run_as_they_are(tmp_path, name):
    from contdepth.train import preflight

    data_dir = write_tiny_cifar10(tmp_path / "cifar-10-batches-py")
    spec = ExperimentSpec.from_yaml(EXPERIMENTS / f"{name}.yaml")
    assert spec.seeds == (0, 1, 2, 3, 4) and all(spec.config(a, 0).epochs == 120 for a in spec.arms)
    for arm in spec.arms:  # the full spec: every option and model checked against the files' folder
        preflight(spec.config(arm, 0, data_dir=str(data_dir)))
    small = ExperimentSpec.from_dict(shrunk(spec.raw), source=name)
    summary = run_experiment(small, tmp_path / "out", data_dir=str(data_dir), threads=1, quiet=True, report=False)
    assert summary is None
    summary = summarize(tmp_path / "out")
    assert all(entry["n"] == 1 for entry in summary["arms"].values()) and not summary["unfinished"]


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_committed_spec_is_valid(path):
    spec = ExperimentSpec.from_yaml(path)
    # the claims of issue 14 rest on at least 5 seeds; the architecture and memory comparisons
    # (issues 16 and 17) ask for at least 3; a pilot sizes an experiment and claims nothing (issue 27)
    least = {"ode_architectures": 3, "memory_modes": 3}.get(spec.name, 3 if spec.name.endswith("_pilot") else 5)
    assert len(spec.seeds) >= least, f"a claim rests on at least {least} seeds"
    for arm in spec.arms:
        spec.config(arm, spec.seeds[0])


def test_the_resolved_spread_leaves_out_manifestations_with_fewer_steps_than_cells():
    from types import SimpleNamespace

    from contdepth.experiment.report import _cells, _invariance

    # one seed: 1 step reads only the first of two cells (40 %), 2 and 4 steps agree (80, 81 %)
    grid = {"accuracy": {"euler": {"1": {"test": 0.40}, "2": {"test": 0.80}, "4": {"test": 0.81}},
                         "rk4": {"1": {"test": 0.50}, "2": {"test": 0.79}, "4": {"test": 0.81}}}}
    inv = _invariance({0: grid}, cells=2)
    assert inv["test_spread_mean"] == pytest.approx(41.0)
    assert inv["test_resolved_spread_mean"] == pytest.approx(2.0)
    assert inv["resolved_min_steps"] == 2
    assert _cells(SimpleNamespace(model_options={"n_basis": [1, 4, 2]})) == 4
    assert _cells(SimpleNamespace(model_options={"n_units": 3})) == 3
    assert _cells(SimpleNamespace(model_options={"alpha": 8})) == 1


def test_reuse_copies_finished_runs_of_the_same_config_and_trains_the_rest(suite, tmp_path, monkeypatch, capsys):
    import contdepth.experiment.job as runner  # where a job calls train

    source, _ = suite
    trained = []
    real_train = runner.train
    monkeypatch.setattr(runner, "train", lambda config, **kw: trained.append(config.out) or real_train(config, **kw))
    other = {**SPEC, "name": "other", "evaluate": None,
             "arms": {"euler_again": {}, "rk4_unrefined": {"model_options": {"scheme": "rk4"}}},
             "comparisons": [{"arm": "rk4_unrefined", "baseline": "euler_again"}]}
    out = tmp_path / "out"
    code = main(["experiment", str(write_spec(tmp_path, other, "other.yaml")), "--out", str(out), "--threads", "1",
                 "--reuse", str(source), "--no-report", "--quiet"])
    assert code == 0
    # euler_again is the suite's euler arm (same config and seeds): copied; rk4 there was refined: trained here
    assert sorted(Path(p).parent.name for p in trained) == ["rk4_unrefined", "rk4_unrefined"]
    for seed in (0, 1):
        copy, original = run_folder(out, "euler_again", seed), run_folder(source, "euler", seed)
        assert (copy / "metrics.jsonl").read_bytes() == (original / "metrics.jsonl").read_bytes()
        assert yaml.safe_load((copy / "config.yaml").read_text())["out"] == str(copy)
        info, _ = read_checkpoint(copy)  # the copied tensors load (their SHA-256 checked)
        assert info.epoch == 2
    sitting = json.loads((out / "experiment.json").read_text())["sittings"][-1]
    assert sitting["reused"] == {f"euler_again/seed-{s}": str(run_folder(source, "euler", s)) for s in (0, 1)}
    summary = summarize(out)
    assert summary["arms"]["euler_again"]["n"] == 2 and summary["reused"] == sitting["reused"]
    # a second sitting takes nothing more: the runs are this suite's own now
    trained.clear()
    assert main(["experiment", str(tmp_path / "other.yaml"), "--out", str(out), "--threads", "1",
                 "--reuse", str(source), "--quiet"]) == 0
    assert trained == [] and "euler_again/seed-0` from" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["experiment", str(tmp_path / "other.yaml"), "--out", str(out), "--reuse", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reuse:" in err and "nope is not a folder" in err


def test_the_suite_estimate_is_the_median_epoch_time_so_a_paused_epoch_does_not_set_it(suite, tmp_path):
    from contdepth.experiment.runner import Job, SuiteProgress

    out = tmp_path / "out"
    shutil.copytree(suite[0], out)
    spec = ExperimentSpec.from_yaml(out / "spec.yaml")
    for seed, times in ((0, [3600.0, 10.0]), (1, [10.0, 10.0])):  # seed 0 was stopped for an hour in epoch 1
        path = run_folder(out, "euler", seed) / "checkpoint.json"
        description = json.loads(path.read_text())
        for row, seconds in zip(description["history"], times):
            row["epoch_time"] = seconds
        path.write_text(json.dumps(description))
        record = json.loads(steps_file(out, "euler", seed).read_text())
        record["seconds"] = 5.0  # the after-training steps took 5 s
        steps_file(out, "euler", seed).write_text(json.dumps(record))
    for seed in (0, 1):  # the rk4 runs are to train: 2 x 2 epochs, at the median of every epoch so far,
        shutil.rmtree(run_folder(out, "rk4", seed))  # and their steps: 2 x 5 s (euler's: rk4 has none now)
        steps_file(out, "rk4", seed).unlink()
    jobs = [Job(spec.raw, spec.source, arm.name, seed, str(out), 1, "cpu", None, True)
            for seed in spec.seeds for arm in spec.arms]
    left = SuiteProgress(spec, out, jobs, 1, quiet=True)._left()
    assert left == ("about 50 s left (epochs to train x median epoch time, steps to do x median steps time)"
                    ), left  # the mean: about an hour


def test_reuse_copies_whole_runs_or_nothing_and_never_takes_an_extended_run(suite, tmp_path, monkeypatch):
    import contdepth.experiment.reuse as reuse

    source = tmp_path / "source"
    shutil.copytree(suite[0], source)
    # euler seed 1 was "extended": its rows say it trained under a 1-epoch schedule first
    path = run_folder(source, "euler", 1) / "checkpoint.json"
    description = json.loads(path.read_text())
    description["history"][0]["schedule_epochs"] = 1
    path.write_text(json.dumps(description))
    spec = ExperimentSpec.from_dict({**SPEC, "name": "other", "evaluate": None, "arms": {"euler_again": {}},
                                     "comparisons": []}, source="other.yaml")
    assert reuse.reusable_run(spec, "euler_again", 0, [source]) == run_folder(source, "euler", 0)
    assert reuse.reusable_run(spec, "euler_again", 1, [source]) is None
    # a copy interrupted half-way leaves no run folder and no staging folder; a user's folder named
    # like one (.seed-0.reuse) is never removed
    out = tmp_path / "out"
    mine = run_folder(out, "euler_again", 0).parent / ".seed-0.reuse"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    calls = []
    real_copy = shutil.copyfile

    def failing(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(reuse.shutil, "copyfile", failing)
    recorded = []
    with pytest.raises(OSError, match="disk full"):
        reuse.reuse_runs(spec, out, [("euler_again", 0)], [source], on_copy=lambda *a: recorded.append(a))
    target = run_folder(out, "euler_again", 0)
    assert not target.exists() and recorded == []
    assert sorted(p.name for p in target.parent.iterdir()) == [".seed-0.reuse"]  # only the user's folder
    monkeypatch.setattr(reuse.shutil, "copyfile", real_copy)
    assert reuse.reuse_runs(spec, out, [("euler_again", 0)], [source]) == {
        "euler_again/seed-0": str(run_folder(source, "euler", 0))}
    assert read_checkpoint(target)[0].epoch == 2
    assert (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in target.parent.iterdir()) == [".seed-0.reuse", "seed-0"]

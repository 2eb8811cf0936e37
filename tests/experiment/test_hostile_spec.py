"""Hostile experiment specs and suite folders: one line, exit status 2, nothing left behind, never a hang.

Specs and suite folders come from anyone (a colleague's spec, a downloaded suite): alias
bombs, values no option takes, names with a newline, a ``!!python`` tag in a run's config,
FIFOs where records should be. Every case runs under ``bounded`` (a regression fails after
seconds instead of filling the machine's memory or waiting forever).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from contdepth.cli import main
from contdepth.common import OptionError
from contdepth.experiment import ExperimentSpec, run_experiment
from contdepth.experiment.folder import read_record, run_folder, steps_current, steps_file
from contdepth.experiment.reuse import copy_run, reusable_run
from contdepth.experiment.progress import SuiteProgress
from contdepth.experiment.runner import Job
from helpers import bounded

BASE = ("base: {model: continuousnet, model_options: {alpha: 2, n_basis: 1}, data: digits, epochs: 1, "
        "train_size: 64, batch_size: 64, eval_batch_size: 1000}\n")


def bomb(levels: int = 9) -> str:
    """The billion laughs as one flow-style value: a list whose last item stands for 9**levels strings."""
    items = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def one_line(capsys, argv: list[str], *needles: str) -> str:
    with bounded(20):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


# --- alias bombs, anywhere in a spec -------------------------------------------------------------------------
B = bomb()
PLACES = {
    "evaluate.schemes": BASE + f"seeds: [0]\narms: {{a: {{}}}}\nevaluate: {{schemes: {B}}}\n",
    "target value": BASE + "seeds: [0]\narms: {a: {}, b: {lr: 0.05}}\n"
                           f"comparisons: [{{arm: b, baseline: a, target: {{time_ratio_max: {B}}}}}]\n",
    "model_options": BASE.replace("alpha: 2", f"alpha: {B}") + "seeds: [0]\narms: {a: {}}\n",
    "data_options": BASE.replace("epochs: 1", f"epochs: 1, data_options: {{test_fraction: {B}}}")
                    + "seeds: [0]\narms: {a: {}}\n",
    "refine_at": BASE + f"seeds: [0]\narms: {{a: {{refine_at: {B}}}}}\n",
    "compress": BASE + f"seeds: [0]\narms: {{a: {{}}}}\ncompress: {{n_basis: 1, latency_batch_sizes: {B}}}\n",
    "arm override": BASE + f"seeds: [0]\narms: {{a: {{lr: {B}}}}}\n",
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_an_alias_bomb_anywhere_in_a_spec_is_one_line_at_once(tmp_path, capsys, place):
    path = tmp_path / "bomb.yaml"
    path.write_text(PLACES[place])
    with bounded(5), pytest.raises(OptionError, match=rf"^{path}: line \d+, column \d+: more than 100,000 values"):
        ExperimentSpec.from_yaml(path)  # was: memory growing until the process was killed
    one_line(capsys, ["experiment", str(path), "--out", str(tmp_path / "out")], "aliases expanded")
    assert not (tmp_path / "out").exists()


def test_a_bomb_or_deep_nesting_in_a_suite_folders_stored_spec(tmp_path, capsys):
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "experiment.json").write_text(json.dumps({"format": "contdepth-experiment", "identity_version": 2,
                                                        "identity": {}, "spec_file": "x.yaml", "sittings": []}))
    (folder / "spec.yaml").write_text(PLACES["arm override"])
    one_line(capsys, ["report", str(folder)], "spec.yaml: line", "aliases expanded")
    (folder / "spec.yaml").write_text("name: deep\nbase:\n" + "- " * 10_000 + "x\n")
    one_line(capsys, ["report", str(folder)], "spec.yaml: line 3", "nested more than 64 levels")  # was RecursionError


# --- values no option takes: refused before the folder exists --------------------------------------------------
@pytest.mark.parametrize("value, words", [
    ("2024-01-01", "is a date or time"),
    ("!!set {x, y}", "a set is not a value"),
    ("!!binary aGVsbG8=", "is binary data"),
    ("{2024-01-01: 1}", "is a date or time"),  # a timestamp as a key
])
def test_values_no_option_takes_leave_nothing_behind(tmp_path, capsys, value, words):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace("epochs: 1", f"epochs: 1, data_options: {{start: {value}}}")
                    + "seeds: [0]\narms: {a: {}}\n")
    one_line(capsys, ["experiment", str(path), "--out", str(tmp_path / "out")], str(path), words)
    assert not (tmp_path / "out").exists()  # was: a spec.yaml, after which the rerun was "not an experiment folder"


def test_a_spec_given_in_python_is_checked_as_a_file_is():
    import datetime

    raw = yaml.safe_load(BASE + "seeds: [0]\narms: {a: {}}\n")
    for value, words in [(datetime.date(2024, 1, 1), "a date"), ({"x", "y"}, "a set"), (b"x", "a bytes")]:
        raw["base"]["data_options"] = {"start": value}
        with pytest.raises(OptionError, match=rf"^mine: base\.data_options\.start: {words}"):
            ExperimentSpec.from_dict(raw, source="mine")  # was: accepted, then a TypeError writing the record


@pytest.mark.parametrize("arm, words", [
    # three refinements of 65 cells: 130, 260, then 520, past what a checkpoint may hold (300 -> 600 at once is
    # the same refusal, but building 300 cells even on the meta device takes seconds)
    ("b: {model_options: {n_basis: 65}, refine_at: [2, 3, 4]}", "refinement 3 (at the start of epoch 4) would give "
                                                                "block 0 (65 functions, 65 steps to begin with) 520"),
    ("b: {model_options: {n_steps: 2100}, refine_at: [2]}", "4,200 steps, more than the 4,096"),
    ("b: {model_options: {widen: 1000000}}", "trainable parameters"),
])
def test_every_arm_is_preflighted_before_the_folder_is_made(tmp_path, capsys, arm, words):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace("epochs: 1", "epochs: 4") + f"seeds: [0]\narms: {{a: {{}}, {arm}}}\n")
    one_line(capsys, ["experiment", str(path), "--out", str(tmp_path / "out")], "arms.b: ", words)
    assert not (tmp_path / "out").exists()  # the first arm would have trained, then the suite died mid-way


# --- names with a newline -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    (BASE + "seeds: [0]\narms: {\"a\\n\": {}}\n", "'a\\n' is not a usable arm name"),
    ("name: \"x\\n\"\n" + BASE + "seeds: [0]\narms: {a: {}}\n", "name: must be letters"),
])
def test_a_name_with_a_trailing_newline_is_refused(tmp_path, capsys, text, words):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(OptionError) as caught:
        ExperimentSpec.from_yaml(path)
    assert words in str(caught.value)
    one_line(capsys, ["experiment", str(path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --- a finished suite, tampered with ----------------------------------------------------------------------------
SPEC = BASE + "seeds: [0]\narms: {a: {}}\nevaluate: {schemes: [euler], n_steps: [1], examples: 50}\n"


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[Path, Path]:
    """A finished one-run suite (its spec file and folder); tests copy it before changing anything."""
    folder = tmp_path_factory.mktemp("hostile_suite")
    spec = folder / "tiny.yaml"
    spec.write_text(SPEC)
    run_experiment(spec, folder / "out", threads=1, quiet=True)
    return spec, folder / "out"


def copy_suite(suite, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(suite[1], target)
    return target


def fifo_in_place_of(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_reuse_skips_a_candidate_whose_config_holds_a_python_tag(suite, tmp_path):
    spec = ExperimentSpec.from_yaml(suite[0])
    bad, good = copy_suite(suite, tmp_path / "bad"), copy_suite(suite, tmp_path / "good")
    config = run_folder(bad, "a", 0) / "config.yaml"
    config.write_text(config.read_text() + "evil: !!python/object/apply:os.system ['touch PWNED']\n")
    with bounded(10):
        assert reusable_run(spec, "a", 0, [bad]) is None  # was: an uncaught ConstructorError aborting the suite
        found = reusable_run(spec, "a", 0, [bad, good])
    assert found == run_folder(good, "a", 0)
    copy_run(found, tmp_path / "taken")
    assert not Path("PWNED").exists() and (tmp_path / "taken" / "checkpoint.json").is_file()


def test_fifos_in_a_suite_folder_are_refused_not_waited_on(suite, tmp_path, capsys):
    spec = ExperimentSpec.from_yaml(suite[0])
    folder = copy_suite(suite, tmp_path)
    fifo_in_place_of(steps_file(folder, "a", 0))
    with bounded(5):
        assert not steps_current(folder, spec.arm("a"), 0)  # a FIFO is no steps record
    fifo_in_place_of(run_folder(folder, "a", 0) / "checkpoint.json")
    progress = SuiteProgress(spec, folder, [Job(spec.raw, spec.source, "a", 0, str(folder), 1, "cpu", None, True)],
                             1, True)
    with bounded(5):
        assert progress._epoch_times() == {}  # was: path.read_text() waiting for a writer forever
    fifo_in_place_of(folder / "experiment.json")
    with bounded(5), pytest.raises(OptionError, match="is not a regular file, so it cannot be an experiment record"):
        read_record(folder)


def test_a_fifo_as_a_worker_log_or_a_report_summary(suite, tmp_path, capsys):
    from contdepth.experiment.process import start_worker

    log = tmp_path / "seed-0.log"
    os.mkfifo(log)
    with bounded(5), pytest.raises(OptionError, match="seed-0.log: cannot write a worker's log"):
        start_worker({}, log)  # was: open(log, "w") waiting for a reader forever
    report = tmp_path / "report"
    report.mkdir()
    os.mkfifo(report / "summary.json")
    one_line(capsys, ["report", str(suite[1]), "--out", str(report)], "holds no report written by contdepth")


def test_a_fifo_as_the_spec(tmp_path, capsys):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    one_line(capsys, ["experiment", str(fifo), "--out", str(tmp_path / "out")],
             f"{fifo}: is not a regular file, so it cannot be an experiment spec")
    assert not (tmp_path / "out").exists()

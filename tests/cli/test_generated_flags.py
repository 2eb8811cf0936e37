"""Every command's flags come from its config classes (issue 28, item 3).

The flags of ``eval``, ``compress``, ``analyze``, ``export``, ``experiment``, ``report``,
``schemes`` and ``demo`` used to be hand-written argparse calls beside dataclasses that said
the same thing, with three different evaluation batch sizes. Here: the parser of each command
holds exactly the fields of its classes (``CLASSES``, the ``RUNTIME`` options it takes), the
CLI source keeps at most ten hand-written flags, every flag that existed still parses to the
same option, and the evaluation batch size has one default.
"""

from __future__ import annotations

import argparse
import ast
import inspect
from dataclasses import fields

import pytest

from contdepth import cli
from contdepth.cli import build_parser, main
from contdepth.commands import options_of
from contdepth.common.options import help_of
from contdepth.experiment import ExperimentSpec
from contdepth.train.config import EVAL_BATCH_SIZE, TrainConfig
from contdepth.train.options import Compress, Evaluate, Runtime
from helpers import REPO_ROOT

CLI_SOURCES = [REPO_ROOT / "contdepth" / "cli.py", *sorted((REPO_ROOT / "contdepth" / "commands").glob("*.py"))]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def hand_written_flags(path) -> list[str]:
    """The ``add_argument("--flag", ...)`` calls of a source file: a flag typed by hand, not generated."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
                and node.args and isinstance(node.args[0], ast.Constant)):
            found.append(f"{path.name}: {node.args[0].value}")
    return found


def test_at_most_ten_flags_are_written_by_hand_and_the_glue_stays_small():
    written = [flag for path in CLI_SOURCES for flag in hand_written_flags(path)]
    assert len(written) <= 10, written
    assert sorted(written) == ["cli.py: --import", "cli.py: --version", "train.py: --config",
                               "train.py: --data-option", "train.py: --model-option"]
    for path in CLI_SOURCES:
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 350, path


@pytest.mark.parametrize("command", cli.COMMANDS, ids=lambda module: module.__name__.rsplit(".", 1)[1])
def test_every_flag_of_a_command_is_a_field_of_its_config_classes(command):
    """Each field with a flag has exactly its flag, with the field's help; nothing else is on the parser."""
    name = {"evaluate": "eval"}.get(command.__name__.rsplit(".", 1)[1], command.__name__.rsplit(".", 1)[1])
    parser = subparsers()[name]
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    runtime = getattr(command, "RUNTIME", {})
    expected = {f.name: (cls, f) for cls in command.CLASSES for f in fields(cls) if f.metadata["flag"]}
    expected.update({f.name: (Runtime, f) for f in fields(Runtime) if f.name in runtime})
    assert set(actions) == set(expected) | set(getattr(command, "HAND_WRITTEN", ())), name
    for dest, (cls, f) in expected.items():
        wanted = runtime.get(dest, {}).get("help", help_of(f)) if cls is Runtime else help_of(f)
        assert actions[dest].help.startswith(wanted), (name, dest)
        if not f.metadata["positional"]:
            assert actions[dest].option_strings[0] == "--" + dest.replace("_", "-"), (name, dest)


# Every flag of every command before issue 28 (from the hand-written parser): argv -> (dest, value).
EXISTING = [
    (["eval", "R", "--scheme", "rk4", "--n-steps", "8"], {"run": "R", "scheme": "rk4", "n_steps": 8}),
    (["eval", "R", "--table", "--schemes", "euler", "heun", "--steps", "1", "2"],
     {"table": True, "schemes": ["euler", "heun"], "steps": [1, 2]}),
    (["eval", "R", "--adaptive", "--rtol", "1e-2", "1e-3", "--atol", "1e-4", "--adaptive-scheme", "bosh3"],
     {"adaptive": True, "rtol": [1e-2, 1e-3], "atol": [1e-4], "adaptive_scheme": "bosh3"}),
    (["eval", "R", "--batch-size", "7", "--data-dir", "D", "--threads", "1", "--device", "cpu"],
     {"batch_size": 7, "data_dir": "D", "threads": 1, "device": "cpu"}),
    (["compress", "R", "--n-basis", "1", "2", "--n-steps", "3", "--finetune-epochs", "2", "--lr", "0.01", "--out", "O",
      "--overwrite", "--latency-batch-sizes", "--latency-repeats", "3", "--batch-size", "9", "--data-dir", "D",
      "--threads", "1", "--device", "cpu", "--quiet"],
     {"n_basis": [1, 2], "n_steps": [3], "finetune_epochs": 2, "lr": 0.01, "out": "O", "overwrite": True,
      "latency_batch_sizes": [], "latency_repeats": 3, "batch_size": 9, "quiet": True}),
    (["demo", "--epochs", "2", "--threads", "1", "--quiet", "--out", "O", "--overwrite"],
     {"epochs": 2, "threads": 1, "quiet": True, "out": "O", "overwrite": True}),
    (["analyze", "R", "--schemes", "euler", "--steps", "1", "2", "--reference", "rk4:8", "--max-examples", "5",
      "--batch-size", "3", "--dtype", "float32", "--out", "O", "--overwrite", "--no-plots", "--data-dir", "D",
      "--threads", "1", "--device", "cpu", "--tensorboard", "T"],
     {"schemes": ["euler"], "steps": [1, 2], "reference": "rk4:8", "max_examples": 5, "batch_size": 3,
      "dtype": "float32", "no_plots": True, "tensorboard": "T"}),
    (["export", "R", "--out", "m.onnx", "--format", "torch_export", "--scheme", "rk4", "--n-steps", "2",
      "--batch-size", "4", "--static-batch", "--input-shape", "1", "8", "8", "--check", "--no-data", "--data-dir", "D",
      "--overwrite", "--threads", "1"],
     {"out": "m.onnx", "format": "torch_export", "batch_size": 4, "static_batch": True, "input_shape": [1, 8, 8],
      "check": True, "no_data": True}),
    (["experiment", "S", "--out", "O", "--workers", "2", "--threads", "2", "--device", "cpu", "--data-dir", "D",
      "--reuse", "A", "--reuse", "B", "--no-report", "--quiet"],
     {"spec": "S", "workers": 2, "reuse": ["A", "B"], "no_report": True, "quiet": True}),
    (["report", "R", "--out", "O", "--no-plots", "--quiet"], {"run": "R", "out": "O", "no_plots": True}),
    (["schemes", "--lm-k", "0.1"], {"lm_k": 0.1}),
    (["train", "--alpha", "8", "--widen", "2", "--n-basis", "1", "--basis", "legendre", "--scheme", "rk4",
      "--n-steps", "2", "--norm", "group", "--model-option", "k=1", "--data-option", "t=0.5", "--config", "c.yaml"],
     {"alpha": 8, "widen": 2, "n_basis": [1], "basis": "legendre", "scheme": "rk4", "n_steps": [2], "norm": "group",
      "model_option": ["k=1"], "data_option": ["t=0.5"], "config": "c.yaml"}),
]


@pytest.mark.parametrize("argv, values", EXISTING, ids=lambda x: x[0] if isinstance(x, list) else "")
def test_every_flag_that_existed_parses_to_the_same_option(argv, values):
    parsed = vars(build_parser().parse_args(argv))
    assert {k: parsed[k] for k in values} == values


def test_the_evaluation_batch_size_has_one_default_everywhere(capsys):
    """eval, analyze, compress, train's per-epoch evaluation and the library functions: 500, said once."""
    from contdepth.analysis import analyze_manifestations, compress_run

    parser = build_parser()
    for argv in (["eval", "R"], ["analyze", "R"], ["compress", "R", "--n-basis", "1", "--out", "O"]):
        assert parser.parse_args(argv).batch_size == EVAL_BATCH_SIZE == 500
    assert TrainConfig().eval_batch_size == Runtime().batch_size == EVAL_BATCH_SIZE
    for function in (analyze_manifestations, compress_run):
        assert inspect.signature(function).parameters["batch_size"].default == EVAL_BATCH_SIZE
    for command in ("eval", "analyze", "compress"):
        text = " ".join(subparsers()[command].format_help().split())
        assert "--batch-size N evaluation batch: examples per forward pass" in text and "(default: 500)" in text
    export = " ".join(subparsers()["export"].format_help().split())  # the example input's batch: another option
    assert parser.parse_args(["export", "R", "--out", "m.onnx"]).batch_size == 1
    assert "not an evaluation batch" in export and "(default: 1)" in export


@pytest.mark.parametrize("argv, message", [
    (["compress", "RUN", "--n-basis", "1", "--finetune-epochs", "20000", "--out", "OUT"],
     "finetune_epochs: must be at most 10,000, got 20,000"),
    (["schemes", "--lm-k", "-1"], "lm_k: must be a finite number > -1"),
    (["eval", "RUN", "--schemes", "euler", "rk9", "--table"], "schemes: must be a list of scheme names from"),
    (["analyze", "RUN", "--dtype", "float16", "--no-plots"], "dtype: must be one of float64, float32"),
    (["demo", "--threads", "0"], "threads: must be an integer in 1.."),
])
def test_a_bad_value_of_a_generated_flag_is_one_line_naming_it(tmp_path, capsys, argv, message):
    argv = [{"RUN": str(tmp_path / "nothing"), "OUT": str(tmp_path / "out")}.get(a, a) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"contdepth {argv[0]}: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_spec_and_the_command_line_share_one_set_of_bounds(tmp_path):
    """The same value is refused in a spec's compress step, by the command line and by ``compress_run``."""
    from contdepth.analysis import compress_run
    from contdepth.common import OptionError

    spec = {"base": {"model": "continuousnet", "model_options": {"alpha": 2, "n_basis": 2}, "data": "digits",
                     "epochs": 1}, "seeds": [0], "arms": {"a": {}}}
    for bad, words in [({"finetune_epochs": 20000}, "finetune_epochs: must be at most 10,000"),
                       ({"latency_batch_sizes": [0]}, "latency_batch_sizes: every batch size must be an integer in "
                                                      "1..65,536"),
                       ({"latency_repeats": 0}, "latency_repeats: must be an integer in 1..10,000"),
                       ({"lr": float("nan")}, "lr: must be a finite number > 0")]:
        with pytest.raises(OptionError, match=f"^spec: compress.{words}"):
            ExperimentSpec.from_dict({**spec, "compress": {"n_basis": 1, **bad}}, source="spec")
        with pytest.raises(OptionError, match=f"^{words}"):
            Compress(n_basis=1, **bad)
        with pytest.raises(OptionError, match=f"^{words}"):
            compress_run(tmp_path / "nothing", 1, out=tmp_path / "out", **bad)
    with pytest.raises(OptionError, match=r"^spec: evaluate.n_steps: must be at most 4,096"):
        ExperimentSpec.from_dict({**spec, "evaluate": {"n_steps": [1, 10**6]}}, source="spec")
    step = ExperimentSpec.from_dict({**spec, "evaluate": {"n_steps": [4, 1, 4], "schemes": ["rk4", "euler", "rk4"]},
                                     "compress": {"n_basis": [1], "lr": 1}}, source="spec").arms[0]
    assert step.evaluate.to_dict() == {"schemes": ["rk4", "euler"], "n_steps": [1, 4], "splits": ["test"],
                                       "examples": None}
    assert step.compress.to_dict() == {"n_basis": 1, "n_steps": None, "finetune_epochs": 0, "lr": 1.0,
                                       "latency_batch_sizes": [1, 256], "latency_repeats": None, "onnx": False}


def test_parsed_options_build_the_same_classes_a_spec_builds():
    args = build_parser().parse_args(["eval", "R", "--table", "--schemes", "euler", "--steps", "2", "1"])
    evaluate = options_of(args, Evaluate)
    assert (evaluate.schemes, evaluate.steps, evaluate.table) == (("euler",), (2, 1), True)  # the table's order kept
    args = build_parser().parse_args(["compress", "R", "--n-basis", "2", "--n-steps", "1", "3", "--out", "O"])
    assert (options_of(args, Compress).n_basis, options_of(args, Compress).n_steps) == (2, (1, 3))


def test_the_basis_names_need_no_torch_and_agree_with_the_classes():
    import contdepth.basis
    import contdepth.basis.bases

    assert contdepth.basis.available_bases() == contdepth.basis.bases.available_bases()
    help_text = " ".join(subparsers()["train"].format_help().split())
    assert f"--basis BASIS depth basis; one of {', '.join(contdepth.basis.available_bases())}" in help_text


def test_a_users_config_with_real_annotations_gets_its_flags():
    """A dataclass written without ``from __future__ import annotations`` (issue 28 review): bool and int types."""
    import argparse
    import dataclasses

    from contdepth.common.options import add_flags, option, values_from

    Sweep = dataclasses.make_dataclass("Sweep", [
        ("fast", bool, option(False, help="skip the slow part")),
        ("steps", int, option(8, help="steps")),
        ("tolerance", float | None, option(None, help="a tolerance")),
    ], frozen=True)
    parser = argparse.ArgumentParser()
    add_flags(parser, Sweep)
    values = values_from(parser.parse_args(["--fast", "--steps", "4", "--tolerance", "0.5"]), Sweep)
    assert values == {"fast": True, "steps": 4, "tolerance": 0.5}

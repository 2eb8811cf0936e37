"""Hostile options: every mistake in a command's options is answered in one line, before any work.

Each case runs ``contdepth.cli.main`` as a stranger would and checks the answer: exit
status 2, exactly one line on stderr that starts with ``contdepth CMD: error: `` and names
the option (or the file), no traceback, and (where it matters) no data or checkpoint read.
"""

import errno
import os
import re
from dataclasses import MISSING, fields

import pytest
import torch

import contdepth.cli
import contdepth.train
# The commands import their modules when they run (a fast start); import those that bind
# load_checkpoint at import now, before a test patches it (they would keep the patched one).
import contdepth.analysis.compression  # noqa: F401
import contdepth.experiment  # noqa: F401
import contdepth.export.from_run  # noqa: F401
from contdepth import data
from contdepth.cli import build_parser, main, train_config_from_args
from contdepth.models import create, registry
from contdepth.train import save_checkpoint
from contdepth.common.files import atomic_write_bytes
from contdepth.train.config import TrainConfig
from helpers import REPO_ROOT

TINY = ["--model", "continuousnet", "--alpha", "2", "--n-basis", "1", "--batch-size", "16", "--threads", "1"]


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the command; assert status 2 and a single ``contdepth CMD: error:`` line holding every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith(f"contdepth {argv[0]}: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture()
def nothing_loaded(monkeypatch):
    """Fail the test if a dataset or a checkpoint is read: options are checked before that."""
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be loaded before the options are checked")

    monkeypatch.setattr(data, "load", refuse)
    monkeypatch.setattr(contdepth.train, "load_checkpoint", refuse)  # the commands import both when they run
    monkeypatch.setattr("contdepth.train.checkpoint.read_checkpoint", refuse)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved digits run (untrained weights: these tests are about options, not accuracy)."""
    torch.manual_seed(0)
    options = {"alpha": 2, "n_basis": 1, "in_channels": 1}
    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="continuousnet", model_options=options, data="digits", epochs=1)
    save_checkpoint(folder, create("continuousnet", **options), epoch=1, config=config.to_dict())
    return folder


@pytest.fixture()
def small_digits(monkeypatch):
    """A tiny digits-shaped dataset in place of the real one: the runs below end within a few steps."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (96, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(96) % 10
    tiny = data.make_dataset("digits", x[:64], y[:64], x[64:], y[64:], num_classes=10, max_value=16.0,
                             source="test: random 8x8 images")
    monkeypatch.setattr(data, "load", lambda *args, **kwargs: tiny)
    return tiny


@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "somefile"
    path.write_text("not a folder\n")
    return path


# --- 1, 2: model options of the wrong type or value ------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--model-option", "alpha=abc"], "model_options.alpha: must be an integer >= 1, got 'abc'"),
    (["--alpha", "-1"], "model_options.alpha: must be an integer >= 1, got -1"),
    (["--widen", "0"], "model_options.widen: must be an integer >= 1, got 0"),
    (["--model-option", "eps=abc"], "model_options.eps: must be a finite number, got 'abc'"),
    (["--model-option", "checkpoint=maybe"], "model_options.checkpoint: must be true or false, got 'maybe'"),
    (["--model-option", "n_basis=[1, 2, x]"], "model_options.n_basis: must be an integer >= 1, got 'x'"),
    (["--model", "resnet", "--model-option", "alpha=[4]"], "model_options.alpha: must be an integer >= 1"),
    (["--model", "lm_resnet", "--model-option", "k_per_channel=sometimes"],
     "model_options.k_per_channel: must be true or false"),
    (["--model", "continuous_mlp", "--model-option", "n_basis=abc"], "model_options.n_basis: must be an integer"),
    (["--model", "gcn", "--data", "karate", "--model-option", "hidden=abc"],
     "model_options.hidden: must be an integer >= 1, got 'abc'"),
    (["--model", "cgnn", "--data", "karate", "--model-option", "checkpoint=2"],
     "model_options.checkpoint: must be true or false, got 2"),
])
def test_a_model_option_of_the_wrong_type_or_value_is_named(tmp_path, capsys, nothing_loaded, argv, message):
    out = tmp_path / "run"
    one_line_error(capsys, ["train", "--out", str(out), *argv], message)
    assert not out.exists()


def test_a_builder_failing_deep_inside_is_traced_back_to_the_option_with_the_wrong_type():
    def probe(*, width: int = 4, rate: float = 0.5, flags: list[int] | None = None) -> torch.nn.Module:
        return torch.nn.Linear(width, 2)  # no checks of its own: torch fails on a string width

    with registry.MODELS.kept():
        registry.register_model("hostile_probe")(probe)
        with pytest.raises(ValueError, match=r"^width: must be an integer, got 'abc'$"):
            create("hostile_probe", width="abc")
        with pytest.raises(ValueError, match=r"^width: must be an integer, got 2\.5$"):
            create("hostile_probe", width=2.5)
    assert registry._wrong_type(probe, {"flags": [1, "x"]}) == ("flags: must be a list of integers or null, "
                                                                 "got [1, 'x']")
    assert registry._wrong_type(probe, {"width": 3, "rate": 1, "flags": None}) is None


def test_a_build_error_naming_no_option_names_the_model_and_its_options(tmp_path, capsys, nothing_loaded):
    def broken(*, in_channels: int = 3, num_classes: int = 10, alpha: int = 16) -> torch.nn.Module:
        raise RuntimeError("Trying to create tensor with negative dimension -1")

    with registry.MODELS.kept():
        registry.register_model("continuousnet", overwrite=True)(broken)
        one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), "--model-option", "alpha=3"],
                       "model_options: model 'continuousnet' cannot be built with {'alpha': 3, 'in_channels': 1, "
                       "'num_classes': 10}: Trying to create tensor with negative dimension -1")
    assert registry.MODELS.get("continuousnet") is not broken


@pytest.mark.parametrize("option", ["alpha", "widen", "num_classes", "in_channels"])
def test_an_integer_too_large_for_torch_is_one_line(tmp_path, capsys, nothing_loaded, option):
    """Past 2**63 the meta build fails inside torch ("Overflow when unpacking long long"), whose message
    went on for 15 lines of C++ frames; the first line is the answer."""
    one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), "--model-option", f"{option}={10**23}"],
                   f"model_options: model 'continuousnet' cannot be built with {{'{option}': {10**23}",
                   "failed to unpack")


# --- 3: devices -------------------------------------------------------------------------------------
def _unavailable_devices() -> list[str]:
    devices = ["nosuch", "cuda:99", "gpu"]
    if not torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.mark.parametrize("device", _unavailable_devices())
@pytest.mark.parametrize("command", ["eval", "analyze", "compress"])
def test_an_unusable_device_is_refused_before_the_checkpoint_is_read(run_dir, tmp_path, capsys, nothing_loaded,
                                                                     command, device):
    extra = {"eval": [], "analyze": ["--no-plots", "--out", str(tmp_path / "an")],
             "compress": ["--n-basis", "1", "--out", str(tmp_path / "small")]}[command]
    one_line_error(capsys, [command, str(run_dir), "--device", device, *extra], "device: ")


def test_a_device_number_must_be_ascii_digits():
    from contdepth.train.config import check_device

    for device in ("cuda:\u00b2", "cuda:\u0661", "cuda:", "cuda:-1"):  # "²".isdigit() is True; int("²") fails
        with pytest.raises(contdepth.train.ConfigError, match="device: must be cpu, cuda or cuda:N"):
            check_device(device, available=False)
    assert check_device("cuda:12", available=False) == "cuda:12"


@pytest.mark.parametrize("device", ["nosuch", "cuda:99"])
def test_train_refuses_an_unusable_device_in_preflight(tmp_path, capsys, nothing_loaded, device):
    one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), "--device", device], "device: ")
    assert not (tmp_path / "run").exists()


# --- 4: an output path under a regular file -------------------------------------------------------
def test_train_out_under_a_file_is_refused_before_the_data(a_file, capsys, nothing_loaded):
    one_line_error(capsys, ["train", "--out", str(a_file / "run")], "out: ", str(a_file))


def test_compress_out_under_a_file_is_refused_before_the_checkpoint(run_dir, a_file, capsys, nothing_loaded):
    one_line_error(capsys, ["compress", str(run_dir), "--n-basis", "1", "--out", str(a_file / "small")],
                   "out: ", str(a_file))


def test_analyze_out_under_a_file_is_refused_before_the_checkpoint(run_dir, a_file, capsys, nothing_loaded):
    one_line_error(capsys, ["analyze", str(run_dir), "--no-plots", "--out", str(a_file / "an")],
                   f"out: {a_file / 'an'} cannot be created: {a_file} is a file, not a folder")


def test_export_out_under_a_file_or_on_a_folder_is_refused_before_the_checkpoint(run_dir, a_file, tmp_path, capsys,
                                                                                 nothing_loaded):
    one_line_error(capsys, ["export", str(run_dir), "--format", "torch_export", "--out", str(a_file / "m.pt2")],
                   f"out: {a_file / 'm.pt2'} cannot be created: {a_file} is a file, not a folder")
    one_line_error(capsys, ["export", str(run_dir), "--format", "torch_export", "--out", str(tmp_path),
                            "--overwrite"], f"out: {tmp_path} is a folder; give the path of a file to write")


# --- 5: export --input-shape ----------------------------------------------------------------------
@pytest.mark.parametrize("shape, message", [
    (["8", "8"], "input_shape: the model does not accept inputs of shape 8 8: it takes C H W (3 values), got 2"),
    (["1", "1", "8", "8"], "it takes C H W (3 values), got 4"),
    (["3", "8", "8"], "input_shape: the model does not accept inputs of shape 3 8 8: it takes C H W with C = 1 "
                         "channel(s), got C = 3"),
    (["1", "100000", "100000"], "input_shape: at most 16,777,216 values per example"),
])
def test_export_input_shape_must_fit_the_model(run_dir, tmp_path, capsys, monkeypatch, shape, message):
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("the data was read before the shape was checked"))
    one_line_error(capsys, ["export", str(run_dir), "--format", "torch_export", "--out", str(tmp_path / "m.pt2"),
                            "--input-shape", *shape], message)
    assert not (tmp_path / "m.pt2").exists()


# --- 6: adaptive tolerances -----------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--rtol", "1e-300"], "rtol: must be 0 or >= 1e-09"),
    (["--rtol", "1e-12"], "rtol: must be 0 or >= 1e-09"),
    (["--rtol", "1e-3", "--atol", "1e-300"], "atol: must be 0 or >= 1e-09"),
    (["--rtol", "nan"], "rtol: must be a finite number >= 0, got nan"),
    (["--rtol=-0.001"], "rtol: must be a finite number >= 0"),
    (["--rtol", "0", "--atol", "0"], "rtol: rtol and atol cannot both be 0"),
])
def test_adaptive_tolerances_are_checked_before_the_checkpoint(run_dir, capsys, nothing_loaded, argv, message):
    one_line_error(capsys, ["eval", str(run_dir), "--adaptive", *argv], message)


def test_the_default_atol_never_falls_below_the_floor():
    from contdepth.cli import TOLERANCE_FLOOR, _adaptive_tolerances

    args = build_parser().parse_args(["eval", "run", "--adaptive", "--rtol", "1e-9", "1e-3"])
    assert _adaptive_tolerances(args) == [(1e-9, TOLERANCE_FLOOR), (1e-3, 1e-4)]


def refused_before_any_work(run_dir, tmp_path, capsys, argv, message):
    """``argv`` (RUN, SMALL, M stand for a run, a compress output, an export file) fails in one line, writing nothing."""
    argv = [{"RUN": str(run_dir), "SMALL": str(tmp_path / "small"), "M": str(tmp_path / "m.pt2")}.get(a, a)
            for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run")]
    one_line_error(capsys, argv, message)
    assert not (tmp_path / "run").exists() and not (tmp_path / "small").exists()


# --- 7: step and basis counts are bounded --------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["train", "--n-steps", "1000000000"], "model_options.n_steps: must be at most 4,096 per block"),
    (["train", "--n-basis", "20000"], "model_options.n_basis: must be at most 512 per block"),
    (["train", "--model", "resnet", "--model-option", "n_units=100000"], "model_options.n_units: must be at most"),
    (["train", "--model", "gcde", "--data", "karate", "--model-option", "n_steps=100000"],
     "model_options.n_steps: must be at most"),
    (["train", "--eval-n-steps", "100000000"], "eval_n_steps: must be at most 4,096 per block"),
    (["eval", "RUN", "--n-steps", "100000000"], "n_steps: must be at most 4,096 per block (far above any useful"),
    (["eval", "RUN", "--table", "--steps", "1", "100000"], "steps: must be at most 4,096"),
    (["analyze", "RUN", "--steps", "100000", "--no-plots"], "steps: must be at most 4,096"),
    (["analyze", "RUN", "--reference", "rk4:1000000000", "--no-plots"], "reference n_steps: must be at most 4,096"),
    (["analyze", "RUN", "--reference", "dopri5:1e-300", "--no-plots"], "reference: the tolerance must be >= 1e-14"),
    (["compress", "RUN", "--n-basis", "100000", "--out", "SMALL"], "n_basis: must be at most 512"),
    (["compress", "RUN", "--n-basis", "1", "--n-steps", "100000000", "--out", "SMALL"], "n_steps: must be at most"),
    (["export", "RUN", "--format", "torch_export", "--n-steps", "100000000", "--out", "M"],
     "n_steps: must be at most 4,096"),
])
def test_step_and_basis_counts_have_a_documented_bound(run_dir, tmp_path, capsys, nothing_loaded, argv, message):
    refused_before_any_work(run_dir, tmp_path, capsys, argv, message)


# --- 8: graph models and image datasets ----------------------------------------------------------
@pytest.mark.parametrize("model, dataset, message", [
    ("gcn", "digits", "model: gcn is a graph model (node classification); data 'digits' is an image dataset. "
                      "Graph datasets: cora, karate"),
    ("cgnn", "fashion_mnist", "model: cgnn is a graph model"),
    ("continuousnet", "cora", "model: continuousnet is an image model; data 'cora' is a graph dataset"),
    ("continuous_mlp", "karate", "model: continuous_mlp is an image model"),
])
def test_a_model_and_dataset_of_different_kinds_are_refused_in_preflight(tmp_path, capsys, nothing_loaded, model,
                                                                         dataset, message):
    one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), "--model", model, "--data", dataset], message)


@pytest.mark.parametrize("options, message", [
    (["--model", "continuousnet", "--scheme", "polynet"],
     "model_options.scheme: 'polynet' applies the rate to its own output, so in training the statistics"),
    (["--model", "polynet", "--model-option", "continuous=true", "--model-option", "gradient=adjoint"],
     "model_options.gradient: the adjoint cannot run 'polynet'"),
])
def test_polynet_training_that_would_mix_statistics_is_refused_in_preflight(tmp_path, capsys, nothing_loaded, options,
                                                                            message):
    one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), *options], message)
    assert not (tmp_path / "run").exists()


def test_the_registries_know_graph_models_and_graph_datasets_by_name():
    from contdepth.data import is_graph_dataset
    from contdepth.models import is_graph_model

    assert [m for m in ("gcn", "gcde", "cgnn", "continuousnet", "resnet") if is_graph_model(m)] == ["gcn", "gcde",
                                                                                                   "cgnn"]
    assert is_graph_dataset("cora") and is_graph_dataset("Karate") and not is_graph_dataset("digits")


# --- 9: a shipped config with fewer epochs ---------------------------------------------------------
def test_a_shipped_config_with_fewer_epochs_says_how_to_clear_refine_at(tmp_path, capsys, nothing_loaded):
    config = str(REPO_ROOT / "configs" / "fashion_mnist.yaml")
    one_line_error(capsys, ["train", "--config", config, "--epochs", "1", "--out", str(tmp_path / "run")],
                   "refine_at: every epoch must be in 1..epochs=1, got [6, 11]",
                   "pass --refine-at with no value to clear it")
    args = build_parser().parse_args(["train", "--config", config, "--epochs", "1", "--refine-at"])
    assert train_config_from_args(args).refine_at == ()


def test_milestones_after_the_last_epoch_are_refused_and_can_be_cleared(tmp_path, capsys, nothing_loaded):
    one_line_error(capsys, ["train", "--schedule", "step", "--milestones", "2", "5", "--epochs", "3",
                            "--out", str(tmp_path / "run")],
                   "milestones: every epoch must be in 1..epochs=3, got [2, 5]",
                   "pass --milestones with no value to clear it")
    path = tmp_path / "c.yaml"
    path.write_text("schedule: step\nmilestones: [8]\nepochs: 10\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "4", "--milestones"])
    assert train_config_from_args(args).milestones == ()


# --- 10: divergence -------------------------------------------------------------------------------
def test_a_diverging_run_ends_in_one_line_naming_epoch_step_and_folder(tmp_path, capsys, small_digits):
    out = tmp_path / "run"
    line = one_line_error(capsys, ["train", *TINY, "--epochs", "1", "--lr", "1e6", "--warmup-epochs", "0",
                                   "--schedule", "constant", "--quiet", "--out", str(out)],
                          "lr: training diverged at epoch 1, step ", str(out))
    assert re.search(r"step \d+", line)


# --- 11: a full disk ------------------------------------------------------------------------------
class _FullDisk:
    """A file object whose writes fail the way a full disk does (``ENOSPC``, no file name)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_an_atomic_write_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k)))
    target = tmp_path / "checkpoint.json"
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"{}")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_a_full_disk_during_training_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, small_digits):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k)))
    out = tmp_path / "run"
    line = one_line_error(capsys, ["train", *TINY, "--epochs", "1", "--quiet", "--out", str(out)],
                          "No space left on device (ENOSPC)", "free some space")
    assert f": error: {out}{os.sep}" in line  # the file being written, inside the run folder


def test_an_os_error_without_a_file_name_still_gives_one_line(run_dir, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(contdepth.train, "load_checkpoint", fail)  # where eval imports it from when it runs
    one_line_error(capsys, ["eval", str(run_dir)], "Input/output error (EIO)")


# --- 12: help texts with defaults -----------------------------------------------------------------
def test_every_train_flag_that_is_a_config_field_shows_help_and_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    for flag, name in (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--seed", "seed")):
        assert re.search(rf"{flag} \S+ [^-]+ \(default: {defaults[name]}\)", text), flag
    assert re.search(r"--weight-decay \S+ .*?\(default: 0\.0005\)", text)
    assert "--eval-batch-size N batch of the evaluations (changes only speed) (default: 500)" in text


# --- the rest: every other numeric option ---------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["train", "--seed", str(2**64)], "seed: must be an integer in 0..2**63-1"),
    (["train", "--split-seed", "-1"], "split_seed: must be an integer in 0..2**63-1"),
    (["train", "--batch-size", "-5"], "batch_size: must be an integer >= 1, got -5"),
    (["train", "--lr", "nan"], "lr: must be a finite number, got nan"),
    (["train", "--threads", "0"], "threads: must be an integer >= 1"),
    (["train", "--warmup-epochs", "20", "--epochs", "2"], "warmup_epochs: must not exceed epochs=2"),
    (["eval", "RUN", "--threads", "0"], "threads: must be an integer in 1.."),
    (["eval", "RUN", "--batch-size", "0"], "batch_size: must be an integer >= 1, got 0"),
    (["eval", "RUN", "--data-dir", "/does/not/exist"], "data_dir: /does/not/exist does not exist"),
    (["analyze", "RUN", "--threads", "0", "--no-plots"], "threads: must be an integer in 1.."),
    (["analyze", "RUN", "--max-examples", "0", "--no-plots"], "max_examples: must be an integer >= 1"),
    (["compress", "RUN", "--n-basis", "1", "--finetune-epochs", "-1", "--out", "SMALL"],
     "finetune_epochs: must be an integer >= 0, got -1"),
    (["compress", "RUN", "--n-basis", "1", "--lr", "nan", "--out", "SMALL"], "lr: must be a finite number > 0"),
    (["compress", "RUN", "--n-basis", "1", "--latency-repeats", "0", "--out", "SMALL"],
     "latency_repeats: must be an integer in 1..10,000, got 0"),
    (["compress", "RUN", "--n-basis", "1", "--latency-batch-sizes", "1", "1000000000", "--out", "SMALL"],
     "latency_batch_sizes: every batch size must be an integer in 1..65,536"),
    (["compress", "RUN", "--n-basis", "1", "--threads", "0", "--out", "SMALL"], "threads: must be an integer in 1.."),
    (["export", "RUN", "--format", "torch_export", "--batch-size", "1000000000", "--out", "M"],
     "batch_size: must be an integer >= 1 and at most 65,536"),
    (["export", "RUN", "--threads", "0", "--out", "M"], "threads: must be an integer in 1.."),
])
def test_every_other_numeric_option_is_checked_before_any_work(run_dir, tmp_path, capsys, nothing_loaded, argv,
                                                                message):
    refused_before_any_work(run_dir, tmp_path, capsys, argv, message)


def test_compress_run_checks_its_device_and_sizes_before_reading_the_run(run_dir, tmp_path, nothing_loaded):
    from contdepth.analysis.compression import compress_run
    from contdepth.train import ConfigError

    with pytest.raises(ConfigError, match=r"^device: must be cpu, cuda or cuda:N; got 'nosuch'$"):
        compress_run(run_dir, 1, out=tmp_path / "small", device="nosuch")
    assert not (tmp_path / "small").exists()


# --- issue 26: YAML in options and configs; sizes only the built model shows -------------------------------------
def billion_laughs() -> str:
    """One flow-style YAML value standing for 9**9 strings (nine anchors, each nine aliases of the one before)."""
    items = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "[" + ", ".join(items) + "]"


def test_an_alias_bomb_or_deep_nesting_in_an_option_or_config_is_one_line(tmp_path, capsys, nothing_loaded):
    from helpers import bounded

    out = tmp_path / "run"
    with bounded(10):  # was: memory growing until the process was killed
        one_line_error(capsys, ["train", "--out", str(out), "--model-option", f"alpha={billion_laughs()}"],
                       "--model-option alpha: line 1", "more than 100,000 values with aliases expanded")
        config = tmp_path / "c.yaml"
        config.write_text(f"epochs: 1\ndata_options: {{test_fraction: {billion_laughs()}}}\n")
        one_line_error(capsys, ["train", "--config", str(config), "--out", str(out)], f"{config}: line 2")
        config.write_text("model_options:\n" + "- " * 10_000 + "x\n")  # was a RecursionError traceback
        one_line_error(capsys, ["train", "--config", str(config), "--out", str(out)], "nested more than 64 levels")
        config.write_text("epochs: 1\nstart: 2024-01-01\n")
        one_line_error(capsys, ["train", "--config", str(config), "--out", str(out)], "is a date or time")
        fifo = tmp_path / "fifo.yaml"
        os.mkfifo(fifo)
        one_line_error(capsys, ["train", "--config", str(fifo), "--out", str(out)], "is not a regular file")
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--lr", "1e308"], "lr: must be at most 3.403e+38, the largest float32"),  # was a RuntimeError mid-step
    (["--weight-decay", "1e300"], "weight_decay: must be at most 3.403e+38"),
    (["--optimizer", "adam", "--eps", "1e300"], "eps: must be at most 3.403e+38"),
    (["--alpha", "1000000"], "trainable parameters; their weights, gradients and sgd state need at least"),
    (["--widen", "1000000"], "model_options: model 'continuousnet' with {'widen': 1000000} has"),
    (["--n-steps", "2100", "--refine-at", "2", "--epochs", "2"],
     "refine_at: refinement 1 (at the start of epoch 2) would give block 0 (2 functions, 2100 steps to begin with) "
     "4,200 steps, more than the 4,096"),  # was: accepted, and the run died at epoch 2
    # 300 -> 600 cells at once is the case; 65 refined three times reaches 520 and builds 5x faster
    (["--n-basis", "65", "--refine-at", "2", "3", "4", "--epochs", "4"],
     "refinement 3 (at the start of epoch 4) would give block 0 (65 functions, 65 steps to begin with) 520 basis "
     "functions, more than the 512 a block may have (its checkpoints could not be read back)"),
])
def test_sizes_and_hyperparameters_are_bounded_before_building(tmp_path, capsys, nothing_loaded, argv, message):
    out = tmp_path / "run"
    one_line_error(capsys, ["train", "--out", str(out), *argv], message)
    assert not out.exists()


@pytest.mark.parametrize("value, shown", [("1e308", "1e+308"), ("abc", "'abc'"), ("[0.2]", "[0.2]")])
def test_a_data_option_of_the_wrong_type_is_one_line(tmp_path, capsys, value, shown):
    out = tmp_path / "run"  # 1e308 is a float (YAML 1.2), and no longer a string compared with a float
    one_line_error(capsys, ["train", "--out", str(out), *TINY, "--data-option", f"test_fraction={value}"],
                   f"test_fraction: expected a number in (0, 1), got {shown}")
    assert not out.exists()

"""Your own model and data: train(config, model=...), --import and entry points, and eval on such runs."""

import os
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch
from torch import nn

import contdepth.plugins as plugins
from contdepth.cli import main
from contdepth.models import available_models
from contdepth.train import ConfigError, TrainConfig, load_checkpoint, train
from contdepth.train.checkpoint import CheckpointError

PLUGIN = """
from torch import nn
from contdepth.models import register_model
from contdepth.data import register_dataset, load

@register_model("{model}")
def build(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, width: int = 8):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, width), nn.ReLU(),
                         nn.Linear(width, num_classes))

register_dataset("{data}", lambda **options: load("digits", **options))
"""


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    """A module that registers a model and a dataset, importable as ``plug_<n>`` (unique per test)."""
    from contdepth.data import registry as data_registry
    from contdepth.models import registry as model_registry

    name = f"plug_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN.format(model=f"m_{name}", data=f"d_{name}")))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    # what the plugin registers is gone after the test (other tests list the registered names)
    with model_registry.MODELS.kept(), data_registry.DATASETS.kept():
        yield name
    sys.modules.pop(name, None)


def test_import_brings_a_registered_model_and_dataset_to_train_and_eval(tmp_path, plugin, capsys):
    run = tmp_path / "run"
    assert main(["--import", plugin, "train", "--model", f"m_{plugin}", "--data", f"d_{plugin}", "--epochs", "1",
                 "--quiet", "--out", str(run)]) == 0
    assert main(["eval", str(run), f"--import={plugin}"]) == 0
    assert f"m_{plugin} on d_{plugin}" in capsys.readouterr().out


def test_eval_of_a_run_whose_model_is_not_imported_names_the_remedy(tmp_path, plugin, capsys):
    run = tmp_path / "run"
    main(["--import", plugin, "train", "--model", f"m_{plugin}", "--data", "digits", "--epochs", "1", "--quiet",
          "--out", str(run)])
    capsys.readouterr()
    from contdepth.models import registry
    registry.MODELS.unregister(f"m_{plugin}")  # a new process, which has not imported the plugin
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"the run's model 'm_{plugin}' is not registered in this process" in err and "--import MODULE" in err


def test_import_failures_are_one_line(capsys):
    assert main(["--import", "no_such_module_here", "schemes"]) == 2
    assert capsys.readouterr().err.strip() == ("contdepth: error: --import: cannot import 'no_such_module_here': "
                                               "ModuleNotFoundError: No module named 'no_such_module_here'")


def test_entry_points_register_models_and_a_broken_one_only_warns(plugin, monkeypatch, capsys):
    points = {"contdepth.models": [EntryPoint("mine", plugin, "contdepth.models"),
                                   EntryPoint("broken", "no_such_plugin_module", "contdepth.models")],
              "contdepth.datasets": []}
    monkeypatch.setattr(plugins, "entry_points", lambda group: points[group])
    monkeypatch.setattr(plugins, "_loaded", set())
    warnings = []
    loaded = plugins.load_plugins(warn=warnings.append)
    assert f"m_{plugin}" in available_models() and len(loaded) == 1
    assert len(warnings) == 1 and "entry point 'broken'" in warnings[0] and "ModuleNotFoundError" in warnings[0]
    assert plugins.load_plugins(warn=warnings.append) == []  # once per process


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)
        self.config = "a user's own attribute, untouched"

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def test_train_accepts_your_own_module_and_its_runs_load_and_resume_with_an_instance(tmp_path):
    out = tmp_path / "run"
    torch.manual_seed(0)
    result = train(TrainConfig(data="digits", epochs=1, quiet=True, out=str(out), threads=1), model=MyNet())
    assert result.history[-1]["test_accuracy"] > 0.2
    assert "model: custom" in (out / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match=r"your own module \('.*MyNet'\).*load_checkpoint\(run, model=MyNet\(\)\)"):
        load_checkpoint(out)
    model, info = load_checkpoint(out, model=MyNet())
    assert info.model_name == "custom" and info.model_class.endswith("MyNet")
    torch.testing.assert_close(model.out.weight, result.model.out.weight)
    with pytest.raises(CheckpointError, match="not the given 'torch.nn.modules.container.Sequential'"):
        load_checkpoint(out, model=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    resumed = TrainConfig(model="custom", data="digits", epochs=2, extend=True, quiet=True, out=str(out), resume=True,
                          threads=1)
    with pytest.raises(ConfigError, match="resume it in Python with a fresh instance"):
        train(resumed)
    assert len(train(resumed, model=MyNet()).history) == 2
    assert main(["eval", str(out)]) == 2


def test_your_own_module_with_a_config_naming_another_model_is_refused():
    with pytest.raises(ValueError, match="MyNet is your own module, but the config names model 'resnet'"):
        train(TrainConfig(model="resnet", data="digits", quiet=True), model=MyNet())
    with pytest.raises(ValueError, match="without model_options"):
        train(TrainConfig(data="digits", model_options={"alpha": 4}, quiet=True), model=MyNet())
    with pytest.raises(ConfigError, match="takes no model_options"):
        TrainConfig(model="custom", model_options={"width": 3})
    assert main(["train", "--model", "custom", "--data", "digits"]) == 2


class OtherNet(MyNet):
    pass


class ODENet(nn.Module):
    def __init__(self):
        super().__init__()
        from contdepth import ContinuousBlock

        self.lift = nn.Linear(64, 8)
        self.block = ContinuousBlock(nn.Sequential(nn.Linear(8, 8), nn.Tanh()), n_basis=1, scheme="euler")
        self.out = nn.Linear(8, 10)

    def forward(self, x):
        return self.out(self.block(self.lift(x.flatten(1))))


def test_a_custom_run_loads_only_into_its_class_with_its_layout(tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(data="digits", epochs=2, refine_at=[2], quiet=True, out=str(out), threads=1), model=ODENet())
    model, info = load_checkpoint(out, model=ODENet())  # refined 1 -> 2 cells: the instance takes the layout
    assert model.block.n_basis == 2 and info.layout
    with pytest.raises(CheckpointError, match=r"the run's model is '.*ODENet', not the given '.*MyNet'"):
        load_checkpoint(out, model=MyNet())
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 2
    assert "resume it in Python" in capsys.readouterr().err
    registered = tmp_path / "registered"
    train(TrainConfig(data="digits", epochs=1, model_options={"alpha": 4, "n_basis": 1}, quiet=True,
                      out=str(registered), threads=1))
    with pytest.raises(ValueError, match="an instance is only for a run of your own module"):
        load_checkpoint(registered, model=MyNet())
    from contdepth.models import register_model

    with pytest.raises(ValueError, match="'custom' is reserved"):
        register_model("custom")(lambda: MyNet())


def test_fp16_steps_that_are_all_skipped_stop_the_run():
    from contdepth.train.runs import TrainingDiverged

    class Broken(MyNet):
        def forward(self, x):  # a finite loss whose gradients are NaN: sqrt'(0) * 0
            return super().forward(x) + torch.sqrt(self.out.weight.sum() * 0)

    with pytest.raises(TrainingDiverged, match="every step of epoch 1 had non-finite gradients in fp16"):
        train(TrainConfig(data="digits", epochs=1, precision="fp16", quiet=True, threads=1), model=Broken())


def test_import_hands_the_modules_to_the_commands_processes_only_while_it_runs(plugin, monkeypatch):
    monkeypatch.delenv(plugins.IMPORTS_ENV, raising=False)
    seen = []
    monkeypatch.setattr("contdepth.cli._run", lambda argv, original: seen.append(os.environ.get(plugins.IMPORTS_ENV)) or 0)
    assert main(["--import", plugin, "schemes"]) == 0
    assert seen == [plugin] and plugins.IMPORTS_ENV not in os.environ

"""Deployment: static manifestations (freeze), torch.export, ONNX, torch.compile and ``contdepth export``."""

import collections
import copy
import json
import re
import sys

import pytest
import torch

from contdepth.cli import main
from contdepth.export import StaticBlock, export_onnx, export_program, freeze, save_program, static_blocks
from contdepth.models import create
from contdepth.nn import continuous_blocks, manifest, project
from contdepth.train import TrainConfig, save_checkpoint

BASES = ("piecewise_constant", "piecewise_linear", "legendre")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest, and immune to a busy machine's thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small_net(basis="piecewise_linear", n_basis=3, scheme="euler", dtype=torch.float64, **options):
    """A ContinuousNet with non-trivial normalisation state (a few training passes on noise)."""
    model = create("continuousnet", in_channels=1, alpha=4, n_basis=n_basis, basis=basis, scheme=scheme,
                   **options).to(dtype)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 8, 8, dtype=dtype) * 2 + 0.5)
    return model.eval()


def _live(model, scheme, n_steps, x):
    with torch.no_grad(), manifest(model, scheme, n_steps):
        return model(x)


# --- freeze ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("scheme", ["euler", "rk4", "ab2"])
def test_frozen_model_matches_the_live_model_at_the_same_manifestation(basis, scheme):
    model = _small_net(basis)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    for n_steps in (2, 5):  # fewer steps than cells, and steps that do not line up with the cells
        frozen = freeze(model, scheme, n_steps)
        assert not continuous_blocks(frozen) and len(static_blocks(frozen)) == 3
        with torch.no_grad():
            got = frozen(x)
        torch.testing.assert_close(got, _live(model, scheme, n_steps, x), rtol=0, atol=1e-6)
    assert all(b.scheme.name == "euler" and b.n_steps == 3 for b in continuous_blocks(model))  # model unchanged


def test_frozen_mlp_matches_and_keeps_the_trained_manifestation_by_default():
    model = create("continuous_mlp", in_features=12, width=8, n_basis=3, basis="legendre", scheme="rk4",
                   n_steps=3).double().eval()
    x = torch.randn(4, 12, dtype=torch.float64)
    frozen = freeze(model)
    (block,) = static_blocks(frozen)
    assert (block.scheme_name, block.n_steps, block.evaluations) == ("rk4", 3, 12)
    assert len(block.units) == 7  # 4 step ends (shared by adjacent steps) and 3 midpoints (shared by 2 stages)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=0, atol=1e-6)


def test_frozen_lm_resnet_keeps_its_learnable_k_tied():
    model = create("lm_resnet", in_channels=1, alpha=4, n_units=3, continuous=True).double().eval()
    with torch.no_grad():
        for stage in model.stages:
            stage[1].k.fill_(-0.3)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    frozen = freeze(model, n_steps=5)
    torch.testing.assert_close(frozen(x), _live(model, None, 5, x), rtol=0, atol=1e-6)
    for stage in frozen.stages:
        assert stage[1].block.lm_k is stage[1].k  # one tensor: fine-tuning k moves the frozen scheme too
    with torch.no_grad():
        frozen.stages[0][1].k.fill_(0.0)
    assert (frozen(x) - _live(model, None, 5, x)).abs().max() > 1e-6


def test_a_frozen_block_holds_one_weight_set_per_distinct_stage_value():
    model = _small_net("piecewise_constant", n_basis=4)
    euler = static_blocks(freeze(model, "euler", 4))[0]
    assert len(euler.units) == 4 and euler.evaluations == 4  # a ResNet stage
    rk4 = static_blocks(freeze(_small_net("piecewise_linear", n_basis=2), "rk4", 2))[0]
    assert rk4.evaluations == 8 and len(rk4.units) == 5  # t = 0, 1/4, 1/2, 3/4, 1
    block = continuous_blocks(model)[0]
    coefficient_shapes = {tuple(c.shape) for _, c in block.coefficient_items()}
    unit_shapes = {tuple(p.shape) for p in euler.units.parameters()}
    assert not coefficient_shapes & unit_shapes  # plain weights: no basis dimension anywhere
    # the stage weights are theta at the stage times, and the BatchNorm statistics the state there
    theta = block.theta(0.5)
    torch.testing.assert_close(euler.units[2][2].weight, theta["2.weight"], rtol=0, atol=0)
    state = dict(block.state_items())
    torch.testing.assert_close(euler.units[2][0].running_mean, state["0.running_mean"][2], rtol=0, atol=0)


def test_freeze_copies_and_leaves_the_model_alone():
    model = _small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = freeze(model, "rk4", 2)
    assert not frozen.training and all(p.requires_grad for p in frozen.parameters())
    with torch.no_grad():
        for p in frozen.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in freeze(model, trainable=False).parameters())
    assert isinstance(freeze(continuous_blocks(model)[0]), StaticBlock)


def test_freeze_rejects_what_it_cannot_freeze():
    with pytest.raises(ValueError, match="model: contains no ContinuousBlock"):
        freeze(create("resnet", in_channels=1, alpha=4))
    with pytest.raises(ValueError, match="scheme"):
        freeze(_small_net(), "rk5")
    with pytest.raises(ValueError, match="n_steps"):
        freeze(_small_net(), "euler", 0)


def test_a_frozen_model_fine_tunes_like_any_module():
    frozen = freeze(_small_net(), "rk4", 2).train()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (6,))
    optimizer = torch.optim.SGD(frozen.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(frozen(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]



def test_a_frozen_template_parameter_stays_frozen_in_the_static_copy():
    # issue 26: a layer the user froze must not become trainable through freeze(trainable=True)
    from contdepth.nn import ContinuousBlock

    torch.manual_seed(0)
    template = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4))
    template[0].weight.requires_grad_(False)
    block = ContinuousBlock(template, n_basis=2, scheme="rk4")
    static = freeze(torch.nn.Sequential(block)).train()
    flags = {name.split(".", 3)[-1]: p.requires_grad for name, p in static.named_parameters()}
    assert flags == {"0.weight": False, "0.bias": True, "2.weight": True, "2.bias": True}
    static(torch.randn(3, 4)).sum().backward()
    assert all(unit[0].weight.grad is None for unit in static_blocks(static)[0].units)
    assert not any(p.requires_grad for p in freeze(torch.nn.Sequential(block), trainable=False).parameters())

# --- torch.export ---------------------------------------------------------------------------------------------
def test_torch_export_program_matches_and_has_a_dynamic_batch(tmp_path):
    model = _small_net("piecewise_linear", n_basis=2, dtype=torch.float32)
    program = export_program(model, torch.randn(1, 1, 8, 8), scheme="rk4", n_steps=2)
    frozen = freeze(model, "rk4", 2)
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), frozen(x), rtol=0, atol=1e-5)
    targets = collections.Counter(str(n.target) for n in program.graph.nodes if n.op == "call_function")
    assert not any("mm" in t or "matmul" in t for t in targets)  # theta is not computed in the graph
    assert sum(n for t, n in targets.items() if "conv" in t) == 1 + 9 + 3 * 2 * 8
    path = save_program(program, tmp_path / "m.pt2")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(str(path)).module()(x), frozen(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        save_program(program, path)


# --- ONNX ------------------------------------------------------------------------------------------------------
def _onnx_modules():
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    return onnx, ort


def _run(ort, path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def test_onnx_continuousnet_runs_in_onnxruntime_and_holds_theta_as_constants(tmp_path):
    onnx, ort = _onnx_modules()
    model = _small_net("piecewise_linear", n_basis=2, dtype=torch.float32)
    path = export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", scheme="rk4", n_steps=2)
    frozen = freeze(model, "rk4", 2)
    for batch in (1, 4):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(_run(ort, path, x), frozen(x), rtol=0, atol=1e-4)
    graph = onnx.load(str(path)).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    assert "MatMul" not in ops and ops["Gemm"] == 1  # only the classifier: no basis matmul
    # 8 stage evaluations of 2 convolutions per block, plus stem and stitches ...
    assert ops["Conv"] == 1 + 9 + 3 * 2 * 8
    # ... reading 5 weight sets per block (theta evaluated once at each distinct stage time)
    initializers = {i.name: tuple(i.dims) for i in graph.initializer}
    conv_weights = {node.input[1] for node in graph.node if node.op_type == "Conv"}
    assert conv_weights <= set(initializers) and len(conv_weights) == 1 + 9 + 3 * 2 * 5
    coefficient_shapes = {tuple(c.shape) for b in continuous_blocks(model) for _, c in b.coefficient_items()}
    assert not coefficient_shapes & set(initializers.values())
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        export_onnx(model, torch.randn(1, 1, 8, 8), path)


def test_missing_onnx_packages_name_the_extra(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now fails
    model = create("continuous_mlp", in_features=12, width=8, n_basis=2)
    with pytest.raises(ImportError, match=re.escape("pip install contdepth[onnx]")):
        export_onnx(model, torch.randn(2, 12), tmp_path / "m.onnx")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--no-data"]) == 2
    assert "format: ONNX export needs the 'onnxscript' package" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_continuous_mlp_matches_torch(tmp_path):
    _, ort = _onnx_modules()
    model = create("continuous_mlp", in_features=12, width=8, n_basis=3, basis="legendre", scheme="ab2").eval()
    path = export_onnx(model, torch.randn(2, 12), tmp_path / "mlp.onnx", n_steps=4, dynamic_batch=False)
    x = torch.randn(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(_run(ort, path, x), _live(model, None, 4, x), rtol=0, atol=1e-4)


# --- torch.compile (aot_eager: dynamo + AOTAutograd without inductor's C++ build, which takes ~1 min here)
def test_compiled_frozen_model_matches_eager_for_inference():
    frozen = freeze(_small_net("legendre", n_basis=2), "rk4", 2)
    compiled = torch.compile(frozen, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), frozen(x), rtol=0, atol=1e-10)


def _train_steps(model, x, y, steps=3):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grads = None
    for step in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if step == 0:
            grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
    return grads


@pytest.mark.parametrize("freeze_first", [False, True], ids=["live", "frozen"])
def test_compiled_training_matches_eager_gradients_and_steps(freeze_first):
    torch._dynamo.reset()
    base = _small_net("piecewise_linear", n_basis=2, scheme="midpoint", n_steps=1).train()  # theta at 0 and 1/2
    if freeze_first:
        base = freeze(base).train()
    eager, compiled_model = base, copy.deepcopy(base)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (6,))
    eager_grads = _train_steps(eager, x, y)
    compiled_grads = _train_steps(compiled, x, y)
    for a, b in zip(eager_grads, compiled_grads):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    for a, b in zip(eager.state_dict().values(), compiled_model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)  # weights after 3 steps and BatchNorm state


def test_compiled_live_model_follows_a_change_of_manifestation():
    torch._dynamo.reset()
    model = create("continuous_mlp", in_features=12, width=8, n_basis=2, basis="piecewise_linear",
                   scheme="euler").double().eval()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(3, 12, dtype=torch.float64)
    with torch.no_grad():
        euler = compiled(x)
        manifest(model, "rk4", 3)
        rk4 = compiled(x)
        torch.testing.assert_close(rk4, model(x), rtol=0, atol=1e-12)
    assert (rk4 - euler).abs().max() > 1e-6  # the graph was not reused across manifestations


# --- contdepth export ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved digits run (untrained weights suffice: export is about the function, not its accuracy)."""
    torch.manual_seed(0)
    options = {"alpha": 4, "n_basis": 2, "basis": "piecewise_linear", "scheme": "euler", "in_channels": 1}
    model = create("continuousnet", **options)
    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="continuousnet", model_options=options, data="digits", epochs=1)
    save_checkpoint(folder, model, epoch=1, config=config.to_dict())
    return folder


def test_export_command_writes_onnx_and_a_sidecar_and_checks_it(run_dir, tmp_path, capsys):
    _onnx_modules()
    out = tmp_path / "model.onnx"
    argv = ["export", str(run_dir), "--scheme", "rk4", "--n-steps", "1", "--format", "onnx", "--out", str(out),
            "--check", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "check: max abs difference from torch" in printed and "(ok," in printed
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["manifestation"] == [{"scheme": "rk4", "n_steps": 1, "units": 3, "evaluations": 4}] * 3
    assert side["input"]["shape"] == ["batch", 1, 8, 8] and side["num_classes"] == 10
    assert side["preprocessing"]["dataset"] == "digits" and len(side["preprocessing"]["mean"]) == 1
    assert side["check"]["max_abs_difference"] < 1e-4
    assert main(argv) == 2  # never overwritten silently
    assert f"out: {out} exists" in capsys.readouterr().err


def test_export_command_torch_export_format(run_dir, tmp_path, capsys):
    out = tmp_path / "model.pt2"
    assert main(["export", str(run_dir), "--format", "torch_export", "--out", str(out), "--no-data", "--check",
                 "--threads", "1"]) == 0
    assert "(ok," in capsys.readouterr().out
    side = json.loads((tmp_path / "model.pt2.json").read_text())
    assert side["preprocessing"] is None and side["manifestation"][0]["scheme"] == "euler"
    program = torch.export.load(str(out))
    assert program.module()(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite"], "format: must be one of onnx, torch_export; got 'tflite'"),
    (["--scheme", "rk5"], "scheme: must be one of"),
    (["--n-steps", "0"], "n_steps: must be an integer >= 1"),
    (["--batch-size", "0"], "batch_size: must be an integer >= 1"),
    (["--input-shape", "3", "32", "32", "--no-data"], "input_shape: the model does not accept inputs"),
])
def test_export_command_names_the_bad_argument(run_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "m.onnx"
    assert main(["export", str(run_dir), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("contdepth export: error: ") and message in err
    assert not out.exists()


def test_the_sidecar_records_the_layout_the_weights_have_after_compression(tmp_path):
    # Built with 4 cells, compressed to 2: the constructor's options still say 4, the weights hold 2.
    options = {"alpha": 4, "n_basis": 4, "scheme": "euler", "in_channels": 1}
    model = create("continuousnet", **options)
    project(model, 2)
    config = TrainConfig(model="continuousnet", model_options=options, data="digits", epochs=1)
    save_checkpoint(tmp_path / "run", model, epoch=1, config=config.to_dict())
    out = tmp_path / "model.pt2"
    assert main(["export", str(tmp_path / "run"), "--format", "torch_export", "--out", str(out), "--no-data",
                 "--threads", "1"]) == 0
    source = json.loads((tmp_path / "model.pt2.json").read_text())["source"]
    assert source["options"]["n_basis"] == 4  # how the model is built
    assert source["layout"] == [{"basis": "piecewise_constant", "n_basis": 2, "scheme": "euler", "n_steps": 2}] * 3

"""Normalisation state is read no further than the depths it was sampled at.

The bug this guards against (found in the invariance suite): a piecewise-linear block
trained with forward Euler on 2 steps samples its BatchNorm statistics at t = 0 and 1/2
only; the fit then sets the node at t = 1 by extrapolation, a running variance there can
be negative, and any finer manifestation returned NaN.
"""

import json
from fractions import Fraction

import pytest
import torch
from torch import nn

from contdepth import ContinuousBlock
from contdepth.nn import FixedGrid
from contdepth.nn.state_range import StateRange
from contdepth.solvers import get_scheme

X = torch.randn(16, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def bn_block(**options) -> ContinuousBlock:
    torch.manual_seed(0)
    template = nn.Sequential(nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 3))
    options = {"basis": "piecewise_linear", "n_basis": 2, "scheme": "euler", "n_steps": 2, **options}
    return ContinuousBlock(template, **options).double()


def manifest(block: ContinuousBlock, scheme: str, n_steps: int) -> ContinuousBlock:
    block.grid = FixedGrid(get_scheme(scheme), n_steps, block.gradient)
    return block


def state_at(block: ContinuousBlock, name: str, t: float) -> torch.Tensor:
    return block.basis.evaluate(block.state.get(name), Fraction(t))


def extrapolating_block() -> ContinuousBlock:
    """Trained on euler 2 steps, with the running variance falling from 1 at t = 0 to 0.2 at t = 1/2."""
    block = bn_block().train()
    block(X)
    with torch.no_grad():  # the nodes' values: linear, so the node at t = 1 is 2 * 0.2 - 1 < 0
        block.state.get("0.running_var").copy_(torch.tensor([[1.0] * 3, [-0.6] * 3], dtype=torch.float64))
    return block.eval()


def test_training_records_the_sampled_depths_and_the_fit_is_unchanged_there():
    block = bn_block()
    assert block.state_depths is None  # never sampled: read anywhere
    reference = bn_block()
    reference.train()(X)
    block.train()(X)
    assert block.state_depths == (0.0, 0.5)
    block.train()(X)
    reference.norm_state.range = None  # the pass before the range existed: same samples, same fit
    reference.train()(X)
    for (name, c), (_, r) in zip(block.state_items(), reference.state_items()):
        torch.testing.assert_close(c, r, rtol=0, atol=0)


def test_a_finer_manifestation_reads_the_state_at_the_deepest_sampled_depth():
    block = extrapolating_block()
    plan = manifest(block, "euler", 4).stage_plan()
    values = block.values_at_stages(plan)
    names = list(block.state_names)
    var = names.index("0.running_var")
    for index, (exact, _) in enumerate(plan.schedule.points):
        read = values.state[plan.row_of_point[index]][var]
        expected = state_at(block, "0.running_var", min(float(exact), 0.5))
        torch.testing.assert_close(read, expected, rtol=0, atol=1e-15)
    # theta itself is read where the stage is (only the state is held to the sampled range)
    weight = block.parameter_names.index("2.weight")
    torch.testing.assert_close(values.parameters[plan.row_of_point[3]][weight],
                               block.theta(0.75)["2.weight"], rtol=0, atol=1e-15)


@pytest.mark.parametrize("scheme,n_steps", [("euler", 16), ("midpoint", 8), ("rk4", 4)])
def test_extrapolated_negative_variance_is_never_read(scheme, n_steps):
    block = extrapolating_block()
    assert state_at(block, "0.running_var", 1.0).min() < 0  # the fit extrapolates below zero at t = 1
    out = manifest(block, scheme, n_steps)(X)
    assert torch.isfinite(out).all()
    block.norm_state.range = None  # without the range: the old behaviour, which the test must be able to see fail
    assert not torch.isfinite(manifest(block, scheme, n_steps)(X)).all()


def test_adaptive_and_static_export_read_the_same_clamped_state():
    from contdepth.export import freeze
    from contdepth.nn import AdaptiveDepth

    block = extrapolating_block()
    manifest(block, "rk4", 4)
    fixed = block(X)
    torch.testing.assert_close(freeze(block)(X), fixed, rtol=0, atol=1e-13)
    out, _ = block.forward_adaptive(X, AdaptiveDepth("dopri5", rtol=1e-10, atol=1e-10))
    assert torch.isfinite(out).all()  # the same field as the fixed grids: it agrees with a fine one
    torch.testing.assert_close(out, manifest(block, "rk4", 64)(X), rtol=0, atol=1e-8)


def test_refinement_keeps_the_range_and_deeper_training_widens_it():
    block = bn_block().train()
    block(X)
    block.refine()  # 4 steps now: the first pass reads t = 3/4 at 1/2, then samples it
    assert block.state_depths == (0.0, 0.5)
    block(X)
    assert block.state_depths == (0.0, 0.75)
    manifest(block, "rk4", 1)(X)
    assert block.state_depths == (0.0, 1.0)


def test_the_range_travels_in_the_state_dict_and_bad_values_are_refused():
    block = bn_block().train()
    block(X)
    state = block.state_dict()
    assert state["state_depth_range"].tolist() == [0, 1, 1, 1, 2, 1]
    fresh = bn_block()
    nn.Sequential(fresh).load_state_dict({f"0.{k}": v for k, v in state.items()})  # nested: the hook still runs
    assert fresh.state_depths == (0.0, 0.5)
    for bad in ([1, 0, 1, 1, 2, 1], [0, 1, 2, 1, 2, 1], [3, 2, 1, 1, 2, 1], [1, 2, 1, 0, 1, 1]):
        with pytest.raises(RuntimeError, match="state_depth_range"):
            fresh.load_state_dict({**state, "state_depth_range": torch.tensor(bad)})
    assert StateRange.decode(torch.zeros(6, dtype=torch.int64)) is None


def saved_checkpoint(folder):
    """A small trained piecewise-linear euler x 2 ContinuousNet saved in ``folder``: (description, tensors)."""
    from safetensors.torch import load_file

    from contdepth.models import create
    from contdepth.train import save_checkpoint

    torch.manual_seed(0)
    model = create("continuousnet", alpha=4, n_basis=2, basis="piecewise_linear", scheme="euler", n_steps=2,
                   in_channels=1, num_classes=3)
    model.train()(torch.randn(4, 1, 12, 12))
    save_checkpoint(folder, model, epoch=1)
    description = json.loads((folder / "checkpoint.json").read_text())
    return description, load_file(folder / description["tensors"])


def rewrite_checkpoint(folder, description: dict, tensors: dict) -> None:
    """Write edited ``tensors`` and ``description`` back, with the tensor file's SHA-256 updated (a forged file)."""
    import hashlib

    from safetensors.torch import save_file

    tensor_file = folder / description["tensors"]
    save_file(tensors, tensor_file, metadata={"format": "contdepth-checkpoint", "epoch": "1"})
    description["tensors_sha256"] = hashlib.sha256(tensor_file.read_bytes()).hexdigest()
    (folder / "checkpoint.json").write_text(json.dumps(description))


def test_a_format_1_checkpoint_takes_its_saved_manifestation_as_the_sampled_range(tmp_path):
    from contdepth.train import load_checkpoint

    description, tensors = saved_checkpoint(tmp_path)
    description["format_version"] = 1
    rewrite_checkpoint(tmp_path, description, {k: v for k, v in tensors.items() if not k.endswith("state_depth_range")})
    loaded, info = load_checkpoint(tmp_path)
    assert info.format_version == 1
    blocks = [m for m in loaded.modules() if isinstance(m, ContinuousBlock)]
    assert blocks and all(b.state_depths == (0.0, 0.5) for b in blocks)


def test_projection_fits_the_state_as_it_is_read_not_its_extrapolation():
    # 4 nodes trained on euler 4 (sampled to t = 3/4); the node at t = 1 extrapolates to -1
    block = bn_block(n_basis=4, n_steps=4).train()
    block(X)
    with torch.no_grad():
        block.state.get("0.running_var").copy_(torch.tensor([[1.0] * 3, [0.7] * 3, [0.4] * 3, [-1.0] * 3],
                                                            dtype=torch.float64))
    block.eval()
    assert torch.isfinite(manifest(block, "rk4", 8)(X)).all()
    block.project(2, n_steps=4)
    assert block.state_depths == (0.0, 0.75)
    # as read (t in [0, 3/4]) the projected variance is positive; the plain L2 projection of the
    # extrapolated line gives nodes [1.24, -0.51]: -0.07 at t = 3/4, and NaN outputs
    assert min(state_at(block, "0.running_var", t).min() for t in (0.0, 0.75)) > 0
    for scheme, n in (("euler", 4), ("rk4", 8)):
        assert torch.isfinite(manifest(block, scheme, n)(X)).all()


def test_projection_without_a_restricted_range_is_the_plain_l2_projection():
    from contdepth.basis import apply_matrix, projection_matrix

    block = bn_block(n_basis=4, n_steps=4, scheme="rk4").train()
    block(X)  # rk4 samples t = 1: the whole interval
    before = block.state.get("0.running_mean").clone()
    matrix = projection_matrix(block.basis, block.basis.with_size(2))
    block.project(2)
    torch.testing.assert_close(block.state.get("0.running_mean"), apply_matrix(matrix, before), rtol=0, atol=0)


def test_a_state_dict_from_before_the_range_loads_strictly_with_the_range_unknown():
    block = bn_block().train()
    block(X)
    old = {k: v for k, v in block.state_dict().items() if k != "state_depth_range"}
    fresh = bn_block()
    fresh.assume_state_sampled_on("euler", 1)
    fresh.load_state_dict(old)  # strict
    assert fresh.state_depths is None and not fresh.state_depth_range.any()


def test_steady_training_has_no_graph_break():
    block = bn_block().train()
    block(X)  # the range is set: later passes of this grid never touch it
    block(X)
    explanation = torch._dynamo.explain(block)(X)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_a_checkpoint_with_a_bad_range_is_refused_naming_the_file_before_loading(tmp_path):
    from contdepth.train import CheckpointError, load_checkpoint

    description, tensors = saved_checkpoint(tmp_path)
    key = next(k for k in tensors if k.endswith("state_depth_range"))
    tensors[key] = torch.tensor([3, 2, 1, 1, 2, 1])  # 3/2: not a depth in [0, 1]
    rewrite_checkpoint(tmp_path, description, tensors)
    with pytest.raises(CheckpointError, match=rf"{description['tensors']}: {key[len('model.'):]}: .*not a range"):
        load_checkpoint(tmp_path)


def test_a_fitted_variance_never_dips_below_the_smallest_sample_in_a_convex_basis():
    # rk4 on 2 steps samples t = 0, 1/4, 1/2, 3/4, 1; a variance of 50 at t = 0 and 1 elsewhere:
    # the least-squares line through those samples is negative at t = 1 (the rk4_pl seed-4 failure)
    block = bn_block(scheme="rk4", n_steps=2).train()
    block(X)
    plan = block.stage_plan()
    samples = []
    for row, ((lo, _), _) in enumerate(plan.row_span):
        values = [torch.full((3,), 0.0 if n.endswith("mean") else (50.0 if lo == 0 else 1.0),
                             dtype=torch.float64) for n in block.state_names]
        samples.append((row, tuple(values)))
    with torch.no_grad():
        block.state.get("0.running_var").fill_(1.0)
    line = torch.linalg.lstsq(torch.as_tensor(plan.weights), torch.tensor([[50.0 if r[0][0] == 0 else 1.0]
                                                                           for r in plan.row_span],
                                                                          dtype=torch.float64)).solution
    assert line.min() < 0  # what the plain fit would store
    block.update_state(plan, samples)
    var = block.state.get("0.running_var")
    assert var.min() >= 1.0 - 1e-12  # the smallest sample: the function stays >= 1 everywhere
    mean = block.state.get("0.running_mean")  # other buffers are plain least squares (may be negative)
    assert torch.allclose(mean, torch.zeros_like(mean))
    assert torch.isfinite(block.eval()(X)).all()

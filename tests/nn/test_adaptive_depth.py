"""Adaptive depth at inference: blocks integrated by an embedded pair that respects breakpoints."""

from fractions import Fraction

import pytest
import torch
from torch import nn

from contdepth import ContinuousBlock
from contdepth.cli import main
from contdepth.models import create
from contdepth.nn import AdaptiveDepth, adaptive_depth, continuous_blocks, manifest
from contdepth.solvers import MaxStepsExceeded
from contdepth.train import TrainConfig, evaluate, evaluate_adaptive, format_adaptive_table, train

X = torch.randn(16, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def mlp_block(basis: str, n_basis: int) -> ContinuousBlock:
    torch.manual_seed(1)
    template = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 6))
    # a long interval makes the ODE hard enough that the tolerance decides the step count
    return ContinuousBlock(template, basis=basis, n_basis=n_basis, scheme="rk4", t1=3.0).double().eval()


def reference(block: ContinuousBlock, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), block.manifest("rk4", 1920):  # a multiple of every cell count here
        return block(x)


@pytest.mark.parametrize("basis, n_basis", [("piecewise_constant", 3), ("piecewise_linear", 4), ("legendre", 3)])
def test_adaptive_block_meets_its_tolerance_and_tighter_costs_more(basis, n_basis):
    block = mlp_block(basis, n_basis)
    exact = reference(block, X)
    errors, evaluations = [], []
    for rtol in (1e-3, 1e-6, 1e-10):
        with torch.no_grad():
            out, stats = block.forward_adaptive(X, AdaptiveDepth("dopri5", rtol, rtol * 1e-2))
        errors.append(float((out - exact).abs().max() / exact.abs().max()))
        evaluations.append(stats.n_evaluations)
        assert errors[-1] < 50 * rtol
    assert evaluations[0] < evaluations[1] < evaluations[2]
    assert errors[2] < errors[0]


def test_steps_end_exactly_on_every_breakpoint_of_the_basis():
    block = mlp_block("piecewise_constant", 5)
    with torch.no_grad():
        _, stats = block.forward_adaptive(X, AdaptiveDepth("bosh3", 1e-2, 1e-3))
    assert block.breakpoints() == tuple(Fraction(3 * k, 5) for k in range(1, 5))
    assert {3 * k / 5 for k in range(1, 6)} <= set(stats.step_ends)
    # Without the breakpoints the jumps in theta would be crossed: one smooth piece per
    # step is what makes the error estimate meaningful.


def test_the_context_switches_every_block_and_restores_the_fixed_grid():
    torch.manual_seed(0)
    model = create("continuous_mlp", in_features=6, num_classes=3, width=6, n_basis=2).double().eval()
    x = X
    with torch.no_grad():
        fixed = model(x)
        with adaptive_depth(model, rtol=1e-8, atol=1e-10) as record:
            adaptive = model(x)
            model(x)
        again = model(x)
    torch.testing.assert_close(again, fixed, rtol=0, atol=0)
    blocks = continuous_blocks(model)
    assert record.calls() == 2 and len(record.stats) == len(blocks)
    assert record.evaluations()[0] == 2 * record.stats[0][0].n_evaluations > 2 * blocks[0].units
    with torch.no_grad(), continuous_blocks(model)[0].manifest("rk4", 256):
        fine = model(x)
    torch.testing.assert_close(adaptive, fine, rtol=1e-6, atol=1e-7)
    with adaptive_depth(model):
        with pytest.raises(RuntimeError, match="already inside"):
            with adaptive_depth(model):
                pass


def test_batch_norm_state_is_read_at_each_depth_in_eval_mode_and_refused_in_training():
    torch.manual_seed(0)
    model = create("continuousnet", in_channels=1, num_classes=3, alpha=4, n_basis=2, basis="piecewise_linear")
    model = model.double()
    images = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    model.train()
    for _ in range(3):  # give the running statistics depth-dependent values
        model(images)
    model.eval()
    with torch.no_grad():
        with adaptive_depth(model, rtol=1e-9, atol=1e-11):
            adaptive = model(images)
        with manifest(model, "rk4", 256):
            fine = model(images)
    mean = dict(continuous_blocks(model)[0].state_items())["0.running_mean"]
    assert not torch.allclose(mean[0], mean[1])  # the state really depends on depth
    torch.testing.assert_close(adaptive, fine, rtol=1e-6, atol=1e-7)
    model.train()
    with adaptive_depth(model), pytest.raises(RuntimeError, match="model.eval"):
        model(images)


def test_training_through_adaptive_depth_works_without_normalisation_state():
    torch.manual_seed(0)
    model = create("continuousnet", in_channels=1, num_classes=3, alpha=4, n_basis=2, norm="group").train()
    images = torch.randn(4, 1, 8, 8)
    with adaptive_depth(model, rtol=1e-3, atol=1e-4, scheme="bosh3"):
        model(images).logsumexp(1).sum().backward()
    grads = [p.grad for p in continuous_blocks(model)[0].parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="scheme: 'rk4' has no error estimate"):
        AdaptiveDepth("rk4")
    with pytest.raises(ValueError, match="rtol: must be a finite number >= 0"):
        AdaptiveDepth("dopri5", rtol=-1.0)
    with pytest.raises(ValueError, match="rtol and atol cannot both be 0"):
        AdaptiveDepth("dopri5", 0.0, 0.0)
    lm = create("lm_resnet", in_channels=1, num_classes=3, alpha=4, continuous=True)
    with pytest.raises(ValueError, match=r"\(1 \+ k\) x' = f"):
        adaptive_depth(lm)
    with pytest.raises(ValueError, match="no ContinuousBlock"):
        adaptive_depth(nn.Linear(2, 2))
    block = mlp_block("piecewise_constant", 2)
    with torch.no_grad(), pytest.raises(MaxStepsExceeded):
        block.forward_adaptive(X, AdaptiveDepth("dopri5", 1e-12, 1e-14, max_steps=3))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive") / "run"
    config = TrainConfig(model="continuousnet", model_options={"alpha": 4, "n_basis": 2, "scheme": "rk4"},
                         data="digits", epochs=1, batch_size=64, threads=1, quiet=True, out=str(out))
    return train(config)


def test_evaluate_adaptive_reports_accuracy_and_evaluations_per_block(tiny_run):
    from contdepth import data

    dataset = data.load("digits")
    model = tiny_run.model
    _, fixed_accuracy = evaluate(model, dataset)
    results = [evaluate_adaptive(model, dataset, rtol, rtol / 10, batch_size=200) for rtol in (1e-2, 1e-6)]
    for r in results:
        assert len(r.evaluations) == 3 and r.fixed_evaluations == (8, 8, 8)
        assert abs(r.accuracy - fixed_accuracy) < 0.02  # rk4 with 2 steps is already close to the ODE
    assert sum(results[1].evaluations) > sum(results[0].evaluations)
    table = format_adaptive_table(results)
    assert "1e-02" in table and "1e-06" in table and "fixed grid" in table


def test_eval_adaptive_on_the_command_line(tiny_run, capsys):
    run = str(tiny_run.run_dir)
    assert main(["eval", run, "--adaptive", "--rtol", "1e-2", "1e-4", "--adaptive-scheme", "bosh3",
                 "--batch-size", "300", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "adaptive depth (bosh3)" in printed and "1e-02" in printed and "1e-04" in printed
    for argv, message in [
        (["--rtol", "1e-3"], "rtol: --rtol/--atol need --adaptive"),
        (["--adaptive", "--adaptive-scheme", "rk4"], "adaptive_scheme: 'rk4' has no error estimate"),
        (["--adaptive", "--rtol", "1e-2", "1e-3", "--atol", "1", "2", "3"], "atol: give one value or one per"),
        (["--adaptive", "--table"], "cannot be combined with --scheme"),
        (["--adaptive", "--rtol", "-1"], "rtol: must be a finite number >= 0"),
    ]:
        assert main(["eval", run, *argv]) == 2
        assert message in capsys.readouterr().err

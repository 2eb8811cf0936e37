"""The block as data (issue 28): a depth function, a norm state, and a strategy that gets one typed rate.

The strategy never calls back into the block: it receives a `BlockRate` and nothing else. Gradient
modes are objects with their own checks; the strings stay as shorthands; statistics such as the
reversible reconstruction error come back in `IntegrationStats`; every temporary setting is one
`Temporary`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.nn import BlockRate, DepthFunction, FixedGrid, Integration, NormState, Temporary
from contdepth.solvers import (
    Adjoint, Backprop, Checkpoint, IntegrationStats, ReconstructionLog, Reversible, Term, get_scheme, gradient_mode,
)

X = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def mlp(width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.Tanh())


def test_a_block_is_a_depth_function_a_norm_state_and_a_strategy():
    block = cd.ContinuousBlock(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4)), n_basis=3, scheme="euler")
    assert isinstance(block.depth, DepthFunction) and isinstance(block.norm_state, NormState)
    assert block.coefficients is block.depth.tree and block.state is block.norm_state.tree  # the module trees
    assert block.basis is block.depth.basis and block.depth.names == block.parameter_names
    assert block.norm_state.names == ("0.running_mean", "0.running_var")
    assert [k for k in block.state_dict() if "coefficients" in k][:2] == ["coefficients.0.weight", "coefficients.0.bias"]
    assert "state_depth_range" in block.state_dict()  # the checkpoint layout is the same as before the redesign
    # the (t - t0) / span normalisation is the depth function's, once: an interval of [2, 6]
    shifted = cd.ContinuousBlock(mlp(), n_basis=4, scheme="euler", t0=2.0, t1=6.0)
    assert shifted.depth.position(3) == 0.25
    torch.testing.assert_close(shifted.theta(3.5)["0.weight"], shifted.coefficients.get("0.weight")[1])


class Recording(Integration):
    """A strategy that records what it receives: a rate, never the block."""

    def __init__(self) -> None:
        self.received: list[object] = []

    def manifestation(self):
        return get_scheme("euler"), 2

    def run(self, rate, x):
        self.received.append(rate)
        out = x
        for (stage,) in rate.plan.schedule.steps:  # two euler steps of h = 1/2
            out = out + 0.5 * rate(stage, out)
        return out, None


def test_a_template_may_name_its_layers_like_the_parts_methods():
    """An attention template's ``key`` or ``position`` layer, a norm called ``range``: the trees hold only
    the template's names, never a name of DepthFunction's or NormState's own (issue 28 review)."""

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.key, self.position, self.range = nn.Linear(4, 4), nn.Linear(4, 4), nn.BatchNorm1d(4)

        def forward(self, x):
            return self.key(self.range(x)) + self.position(x)

    block = cd.ContinuousBlock(Attention(), n_basis=2, scheme="euler").double()
    assert block(X).shape == X.shape and "coefficients.key.weight" in block.state_dict()
    assert "state.range.running_mean" in block.state_dict()


def test_a_strategy_receives_one_typed_rate_and_nothing_of_the_block():
    block = cd.ContinuousBlock(mlp(), n_basis=2, scheme="euler").double()
    strategy = Recording()
    with block.integrate_with(strategy) as same:
        assert same is block and block.integration is strategy
        out = block(X)
    assert block.integration is block.grid  # undone on exit
    (rate,) = strategy.received
    assert isinstance(rate, BlockRate) and isinstance(rate, Term)
    assert not any(value is block for value in vars(rate).values())  # the rate holds the block's parts, not the block
    with torch.no_grad():
        torch.testing.assert_close(out, block.manifest("euler", 2).value(X))


def test_gradient_modes_are_objects_with_their_own_checks_and_strings_as_shorthands():
    assert gradient_mode("reversible") == Reversible() and gradient_mode("adjoint") == Adjoint()
    assert gradient_mode("backprop", checkpoint=True) == Checkpoint() and gradient_mode(Backprop()) == Backprop()
    assert gradient_mode("reversible", tolerance=0.5) == Reversible(0.5)
    with pytest.raises(ValueError, match="reconstruction_tolerance"):
        Reversible(-1.0)
    with pytest.raises(ValueError, match="'rk4' is not reversible"):
        Reversible().check(get_scheme("rk4"))
    with pytest.raises(ValueError, match="gradient: must be one of backprop, checkpoint, reversible, adjoint"):
        gradient_mode("rev")
    block = cd.ContinuousBlock(mlp(), n_basis=2, scheme="reversible_heun", gradient=Reversible(tolerance=0.25))
    assert block.gradient == "reversible" and block.grid.gradient == Reversible(0.25)
    assert block.reconstruction_tolerance == 0.25
    with pytest.raises(ValueError, match="'rk4' is not reversible"):  # checked where the mode is chosen
        cd.ContinuousBlock(mlp(), scheme="rk4", gradient=Reversible())
    # a manifestation keeps the mode, checked once: evaluation works, a gradient pass says why not
    grid = FixedGrid(get_scheme("rk4"), 4, Reversible())
    assert grid.refusal is not None and "'rk4' is not reversible" in grid.refusal
    with pytest.raises(ValueError, match="'rk4' is not reversible"):
        grid.checked()


def test_the_reconstruction_error_comes_back_in_integration_stats_not_in_the_modules_dict():
    block = cd.ContinuousBlock(mlp(), n_basis=2, scheme="reversible_heun", n_steps=4, gradient="reversible").double()
    x = X.clone().requires_grad_()
    out, stats = block.run(block.grid, x)
    assert isinstance(stats, IntegrationStats) and isinstance(stats.reconstruction, ReconstructionLog)
    assert stats.reconstruction.last is None  # known only once backward has run
    out.sum().backward()
    assert 0 <= stats.reconstruction.last < 1e-10 and block.reconstruction_error == stats.reconstruction.last
    assert block.worst_reconstruction_error() == stats.reconstruction.last and block.worst_reconstruction_error() is None
    assert "_worst_reconstruction" not in vars(block)
    _, plain = block.run(FixedGrid(get_scheme("rk4"), 2), X)
    assert plain.reconstruction is None and plain.n_evaluations == 8


def test_every_temporary_setting_is_one_mechanism_applied_at_once_and_undone_on_exit():
    block = cd.ContinuousBlock(mlp(), n_basis=2, scheme="euler")
    change = block.manifest("rk4", 8)
    assert isinstance(change, Temporary) and block.scheme.name == "rk4"  # applied at once
    change.undo()
    change.undo()  # a second undo does nothing
    assert (block.scheme.name, block.n_steps) == ("euler", 2)
    model = nn.Sequential(block, cd.ContinuousBlock(mlp(), n_basis=1, scheme="euler"))
    with cd.nn.manifest(model, "midpoint", 4) as same:
        assert same is model and {b.n_steps for b in cd.nn.continuous_blocks(model)} == {4}
    assert [b.n_steps for b in cd.nn.continuous_blocks(model)] == [2, 1]
    with pytest.raises(ValueError, match="n_steps"):  # a refused setting leaves the whole model as it was
        cd.nn.manifest(model, "rk4", 0)
    assert [b.scheme.name for b in cd.nn.continuous_blocks(model)] == ["euler", "euler"]
    with cd.nn.adaptive_depth(model.eval()) as record:
        assert all(b.integration is not b.grid for b in cd.nn.continuous_blocks(model))
        model(X.float())
    assert record.calls() == 1 and all(b.integration is b.grid for b in cd.nn.continuous_blocks(model))


def test_the_reconstruction_tolerance_is_checked_kept_and_given_once():
    with pytest.raises(ValueError, match="reconstruction_tolerance"):
        cd.ContinuousBlock(mlp(), reconstruction_tolerance=-1.0)
    block = cd.ContinuousBlock(mlp(), n_basis=2, scheme="reversible_heun", reconstruction_tolerance=0.5)
    block.gradient = "reversible"  # the string takes the block's tolerance
    assert block.grid.gradient == Reversible(0.5) and block.reconstruction_tolerance == 0.5
    block.reconstruction_tolerance = 0.25
    assert block.grid.gradient == Reversible(0.25)
    with pytest.raises(ValueError, match="conflicts with"):
        cd.ContinuousBlock(mlp(), scheme="alf", gradient=Reversible(0.1), reconstruction_tolerance=0.3)


def test_a_fixed_grids_stats_count_what_the_forward_pass_evaluated():
    block = cd.ContinuousBlock(mlp(), n_basis=2, scheme="backward_euler", n_steps=4).double()
    _, stats = block.run(block.grid, X)
    assert stats.n_steps == 4 and stats.n_evaluations > 8  # the fixed-point iterations, not a nominal 2 per step

"""``units_to_block``: a stage of ``x + body(x)`` units converts exactly; anything else is refused in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.nn import units_to_block

WIDTH = 6
SHAPE = (4, WIDTH, 5, 5)


class Unit(nn.Module):
    """A residual unit: pre-activation ``x + body(x)`` unless told otherwise."""

    def __init__(self, width: int = WIDTH, *, post: bool = False, stride: int = 1, projection: bool = False,
                 last: nn.Module | None = None) -> None:
        super().__init__()
        layers = [nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, stride=stride)]
        self.body = nn.Sequential(*layers, *([last] if last is not None else []))
        self.post = post
        self.shortcut = nn.Conv2d(width, width, 1, stride=stride) if projection or stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shortcut(x) + self.body(x)
        return torch.relu(y) if self.post else y


def stage(n: int = 4, **options) -> nn.Sequential:
    """``n`` units with trained-looking normalisation statistics, in float64."""
    torch.manual_seed(0)
    units = nn.Sequential(*[Unit(**options) for _ in range(n)]).double()
    with torch.no_grad():
        for module in units.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return units


def batch(n: int = 8) -> torch.Tensor:
    return torch.randn(n, WIDTH, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_a_pre_activation_stage_converts_to_the_same_function_in_both_modes():
    units = stage(4).train()
    before = {k: v.clone() for k, v in units.state_dict().items()}
    block = units_to_block(units, probe_shape=SHAPE)
    assert (block.basis.name, block.n_basis, block.scheme.name, block.n_steps) == ("piecewise_constant", 4, "euler", 4)
    assert block.training and units.training and all(m.training for m in units.modules())  # modes as they were
    assert all(torch.equal(v, before[k]) for k, v in units.state_dict().items())  # the units are untouched
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), units.eval()(x), rtol=0, atol=1e-12)
        # training mode: batch statistics per unit, the same function again
        torch.testing.assert_close(block.train()(x), units.train()(x), rtol=0, atol=1e-12)


def test_a_probe_batch_may_be_given_and_a_frozen_layer_stays_frozen():
    units = stage(3)
    for unit in units:
        unit.body[0].weight.requires_grad_(False)
    block = units_to_block(list(units), probe=batch(2))
    frozen = dict(block.coefficient_items())["0.weight"]
    assert not frozen.requires_grad and dict(block.coefficient_items())["2.weight"].requires_grad
    for k, unit in enumerate(units):
        torch.testing.assert_close(frozen[k], unit.body[0].weight, rtol=0, atol=0)


@pytest.mark.parametrize("options, message", [
    ({"post": True}, r"^units\[0\]: its output differs from x \+ body\(x\) by .* post-activation"),
    ({"projection": True}, r"^units\[0\]: its output differs from x \+ body\(x\) by .*shortcut other than the "
                           r"identity"),
    ({"stride": 2}, r"^units\[0\]: its body maps shape \(4, 6, 5, 5\) to \(4, 6, 3, 3\): a downsampling unit"),
    ({"last": nn.Tanh()}, r"^units\[0\]: its body is not linear in its last layer's weights \('2'\): with them "
                          r"times 2"),
    ({"last": nn.BatchNorm2d(WIDTH, affine=False)},  # with its running statistics it shows in eval mode
     r"^units\[0\]: its body is not linear in its last layer's weights \('2'\): with them times 2"),
])
def test_units_that_are_not_x_plus_body_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as error:
        units_to_block(stage(3, **options), probe_shape=SHAPE)
    assert "\n" not in str(error.value) and isinstance(error.value, cd.OptionError)


def test_a_factor_undone_by_batch_statistics_is_refused_in_training_mode():
    # A norm without affine weights after the last convolution, with statistics that happen to let
    # the factor through in eval mode (zero mean), still undoes it in training: the block's field would
    # be body, not n * body.
    units = stage(3, last=nn.BatchNorm2d(WIDTH, affine=False))
    for unit in units:
        unit.body[3].reset_running_stats()
    with pytest.raises(ValueError, match=r"^units\[0\]: its body is not linear .*: in training mode with them times 2"):
        units_to_block(units, probe_shape=SHAPE)


def test_units_of_different_shapes_are_refused():
    units = [Unit(), Unit(), Unit(WIDTH + 2)]
    with pytest.raises(ValueError, match=r"^units\[2\]: its body's parameter '0.bias' has shape \(8,\)"):
        units_to_block(units, probe_shape=SHAPE)


@pytest.mark.parametrize("call, message", [
    (lambda u: units_to_block(u), r"^probe: give a probe batch"),
    (lambda u: units_to_block(u, probe=batch(), probe_shape=SHAPE), r"^probe: give a probe batch"),
    (lambda u: units_to_block(u, probe_shape=(2, 3, 5, 5)), r"^probe: units\[0\]'s body cannot take a probe"),
    (lambda u: units_to_block(u, probe_shape=(10**9, 10**9)), r"^probe_shape: at most"),
    (lambda u: units_to_block(u, probe_shape=SHAPE, body="missing"), r"^units\[0\]: Unit has no body module"),
    (lambda u: units_to_block(u, probe_shape=SHAPE, last_layer="9"), r"^last_layer: the body has no submodule"),
    (lambda u: units_to_block(u[0], probe_shape=SHAPE), r"^units: give the stage's units"),
    (lambda u: units_to_block([], probe_shape=SHAPE), r"^units: the stage has no units"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(stage(2))


def test_units_that_freeze_different_parameters_are_refused():
    # issue 26 review: one unit's frozen layer became a trainable coefficient of the block (units[0]'s
    # flags were taken for every depth)
    units = stage(3)
    units[1].body[2].weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^units\[1\]: its body's parameter '2.weight' is frozen but units\[0\]'s "
                                         r"is trainable") as error:
        units_to_block(units, probe_shape=SHAPE)
    assert "\n" not in str(error.value)


def test_a_probe_of_one_example_converts_a_unit_with_batch_normalisation():
    # issue 26 review: the training-mode check ran the probe alone, and BatchNorm1d refuses batch
    # statistics of one example, so a valid pre-activation unit was refused ("cannot run in training mode")
    class Unit1d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.BatchNorm1d(WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    torch.manual_seed(0)
    units = nn.Sequential(*[Unit1d() for _ in range(3)]).double().eval()
    block = units_to_block(units, probe=torch.randn(1, WIDTH, dtype=torch.float64))
    x = torch.randn(5, WIDTH, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), units(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"in training mode with them times 2"):  # the check still runs
        units_to_block(stage(3, last=nn.BatchNorm2d(WIDTH, affine=False)).apply(
            lambda m: m.reset_running_stats() if isinstance(m, nn.BatchNorm2d) and not m.affine else None),
            probe=batch(1))

"""``layers_to_block``: a stack of pre-LN transformer layers converts exactly; anything else is refused in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import contdepth as cd
from contdepth.nn import layers_to_block

WIDTH, HEADS, TOKENS = 8, 2, 5
SHAPE = (3, TOKENS, WIDTH)


class Attention(nn.Module):
    """A user's causal self-attention, its LayerNorm inside unless ``norm=False``."""

    def __init__(self, width: int = WIDTH, norm: bool = True) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width) if norm else nn.Identity()
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = (z.reshape(b, t, HEADS, w // HEADS).transpose(1, 2) for z in self.qkv(self.ln(x)).split(w, -1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, w))


class FeedForward(nn.Module):
    def __init__(self, width: int = WIDTH, norm: bool = True, last: nn.Module | None = None) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width) if norm else nn.Identity()
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.last = last if last is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.down(F.gelu(self.up(self.ln(x)))))


class Block(nn.Module):
    """A pre-LN layer ``x + attn(x); x + ffn(x)``, or post-LN / parallel when told."""

    def __init__(self, width: int = WIDTH, *, form: str = "pre", last: nn.Module | None = None) -> None:
        super().__init__()
        self.form = form
        self.attn = Attention(width, norm=form != "post")
        self.ffn = FeedForward(width, norm=form != "post", last=last)
        if form == "post":
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "post":
            x = self.ln1(x + self.attn(x))
            return self.ln2(x + self.ffn(x))
        if self.form == "parallel":
            return x + self.attn(x) + self.ffn(x)
        x = x + self.attn(x)
        return x + self.ffn(x)


def stack(n: int = 3, **options) -> nn.ModuleList:
    torch.manual_seed(0)
    layers = nn.ModuleList([Block(**options) for _ in range(n)]).double()
    with torch.no_grad():  # LayerNorm weights away from their initial ones: every parameter matters
        for module in layers.modules():
            if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return layers


def run(layers, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def batch(n: int = 4, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, TOKENS, WIDTH, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_a_pre_ln_stack_converts_to_the_same_function_in_both_modes():
    layers = stack(4).train()
    before = {k: v.clone() for k, v in layers.state_dict().items()}
    block = layers_to_block(layers, terms=("attn", "ffn"), probe_shape=SHAPE)
    assert isinstance(block.template, cd.nn.Terms)
    assert (block.basis.name, block.n_basis, block.scheme.name, block.n_steps) == (
        "piecewise_constant", 4, "lie_trotter", 4)
    assert block.training and all(m.training for m in layers.modules())  # modes as they were
    assert all(torch.equal(v, before[k]) for k, v in layers.state_dict().items())  # the layers are untouched
    coefficients = dict(block.coefficient_items())
    torch.testing.assert_close(coefficients["modules_of_terms.1.down.weight"][2], 4 * layers[2].ffn.down.weight)
    torch.testing.assert_close(coefficients["modules_of_terms.0.qkv.weight"][1], layers[1].attn.qkv.weight)
    with torch.no_grad():
        for x in (batch(), batch(2, seed=7)):  # fresh inputs, not the probe
            torch.testing.assert_close(block.eval()(x), run(layers.eval(), x), rtol=0, atol=1e-12)
            torch.testing.assert_close(block.train()(x), run(layers.train(), x), rtol=0, atol=1e-12)


def test_the_block_manifests_refines_and_trains():
    layers = stack(3)
    block = layers_to_block(list(layers), terms=("attn", "ffn"), probe=batch(2))
    x = batch()
    with torch.no_grad():
        for scheme, steps in (("strang", 6), ("strang_midpoint", 3), ("rk4", 6)):
            with block.manifest(scheme, steps):
                out = block(x)
            assert out.shape == x.shape and torch.isfinite(out).all()
        with block.manifest(None, 6):
            before = block(x)
        block.refine()  # 6 cells, 6 steps: the same function as 3 cells on 6 steps
        assert (block.n_basis, block.n_steps) == (6, 6)
        torch.testing.assert_close(block(x), before, rtol=0, atol=1e-12)
    block(x).square().mean().backward()
    grads = [c.grad for _, c in block.coefficient_items()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().max() > 0 for g in grads)


def test_terms_may_be_functions_and_of_any_number():
    # three terms (the ffn twice in a row, a layer of its own kind), one given by a function
    class Three(Block):
        def __init__(self) -> None:
            super().__init__()
            self.ffn2 = FeedForward()

        def forward(self, x):
            x = super().forward(x)
            return x + self.ffn2(x)

    torch.manual_seed(1)
    layers = [Three().double() for _ in range(3)]
    block = layers_to_block(layers, terms=("attn", "ffn", lambda layer: layer.ffn2), probe_shape=SHAPE,
                            scheme="strang")
    assert (block.scheme.name, block.scheme.terms) == ("strang", 3)  # the manifestation asked for
    x = batch()
    with torch.no_grad(), block.manifest(cd.solvers.lie_trotter(3)):
        torch.testing.assert_close(block(x), run(layers, x), rtol=0, atol=1e-12)

    class One(nn.Module):  # one term: Lie-Trotter is Euler, the ResNet case
        def __init__(self) -> None:
            super().__init__()
            self.ffn = FeedForward()

        def forward(self, x):
            return x + self.ffn(x)

    layers = [One().double() for _ in range(3)]
    block = layers_to_block(layers, terms=("ffn",), probe_shape=SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(block(x), run(layers, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("options, message", [
    ({"form": "post"}, r"^layers\[0\]: its output differs from the Lie-Trotter composition x <- x \+ attn\(x\); "
                       r"x <- x \+ ffn\(x\) by .* a post-LN layer"),
    ({"form": "parallel"}, r"^layers\[0\]: its output differs from the Lie-Trotter composition .* parallel one"),
    ({"last": nn.LayerNorm(WIDTH, elementwise_affine=False)},
     r"^layers\[0\]: its ffn term is not linear in its last layer's weights \('down'\): with them times 2"),
])
def test_layers_that_are_not_lie_trotter_steps_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as error:
        layers_to_block(stack(3, **options), terms=("attn", "ffn"), probe_shape=SHAPE)
    assert "\n" not in str(error.value) and isinstance(error.value, cd.OptionError)


def test_terms_in_another_order_are_refused():
    with pytest.raises(ValueError, match=r"^layers\[0\]: its output differs from the Lie-Trotter composition "
                                         r"x <- x \+ ffn\(x\); x <- x \+ attn\(x\)"):
        layers_to_block(stack(2), terms=("ffn", "attn"), probe_shape=SHAPE)


def test_layers_of_different_widths_are_refused_naming_the_layer():
    torch.manual_seed(0)
    layers = [Block().double(), Block().double(), Block(WIDTH + 4).double()]
    with pytest.raises(ValueError, match=r"^layers\[2\]: its attn term's parameter '.*' has shape \(.*\) but "
                                         r"layers\[0\]'s has") as error:
        layers_to_block(layers, terms=("attn", "ffn"), probe_shape=SHAPE)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("call, message", [
    (lambda s: layers_to_block(s, probe_shape=SHAPE), r"^layers\[0\]: Block has no term module at its attribute "
                                                      r"'attention' \(got NoneType\)"),
    (lambda s: layers_to_block(s, terms="attn", probe_shape=SHAPE), r"^terms: give the layer's terms"),
    (lambda s: layers_to_block(s, terms=(s[0].attn, "ffn"), probe_shape=SHAPE), r"^terms\[0\]: give an attribute"),
    (lambda s: layers_to_block(s, terms=("attn", "ffn")), r"^probe: give a probe batch"),
    (lambda s: layers_to_block(s, terms=("attn", "ffn"), probe_shape=(2, 3, WIDTH + 1)),
     r"^probe: layers\[0\]'s attn term cannot take a probe"),
    (lambda s: layers_to_block(s, terms=("attn", "ffn"), probe_shape=SHAPE, last_layers=("out", "nope")),
     r"^last_layers\[1\]: the ffn term has no submodule 'nope'"),
    (lambda s: layers_to_block(s, terms=("attn", "ffn"), probe_shape=SHAPE, last_layers=("out",)),
     r"^last_layers: give one submodule name per term \(2 in all"),
    (lambda s: layers_to_block(s, terms=("attn", "ffn"), probe_shape=SHAPE, scheme=cd.solvers.strang(3)),
     r"^scheme: 'strang' splits a field of 3 terms, and the layers have 2"),
    (lambda s: layers_to_block(s[0], terms=("attn", "ffn"), probe_shape=SHAPE), r"^layers: give the stack's layers"),
    (lambda s: layers_to_block([], terms=("attn", "ffn"), probe_shape=SHAPE), r"^layers: the stack has no layers"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call(stack(2))
    assert "\n" not in str(error.value)


def test_last_layers_may_be_named_and_frozen_parameters_stay_frozen():
    layers = stack(2)
    for layer in layers:
        layer.ffn.ln.weight.requires_grad_(False)
    block = layers_to_block(layers, terms=("attn", "ffn"), probe_shape=SHAPE, last_layers=(None, "down"))
    coefficients = dict(block.coefficient_items())
    assert not coefficients["modules_of_terms.1.ln.weight"].requires_grad
    assert coefficients["modules_of_terms.1.down.weight"].requires_grad
    layers[1].ffn.ln.weight.requires_grad_(True)
    with pytest.raises(ValueError, match=r"^layers\[1\]: its ffn term's parameter 'ln.weight' is trainable but "
                                         r"layers\[0\]'s is frozen"):
        layers_to_block(layers, terms=("attn", "ffn"), probe_shape=SHAPE)

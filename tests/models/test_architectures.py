"""PolyNet, FractalNet and RevNet as models (discrete and continuous), and LM-ResNet's authors' start."""

import pytest
import torch

import contdepth as cd
from contdepth.models import FractalUnit, PolyUnit, RevUnit, create
from contdepth.nn import continuous_blocks, refine

X = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
NAMES = ["polynet", "fractalnet", "revnet"]


def build(name, **options):
    torch.manual_seed(0)
    return create(name, in_channels=1, num_classes=10, alpha=4, **options)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("continuous", [False, True])
def test_each_architecture_builds_trains_a_step_and_classifies(name, continuous):
    model = build(name, n_units=2, continuous=continuous)
    out = model(X)
    assert out.shape == (3, 10)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    blocks = continuous_blocks(model)
    assert len(blocks) == (3 if continuous else 0)
    if continuous:
        assert {b.scheme.name for b in blocks} == {name}


def test_the_discrete_units_are_the_papers_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    poly = PolyUnit(4, "none")
    torch.testing.assert_close(poly(x), x + poly.f(x) + poly.f(poly.f(x)))
    fractal = FractalUnit(4, "none")
    y = x + fractal.f1(x)
    torch.testing.assert_close(fractal(x), 0.5 * x + 0.5 * (y + fractal.f2(y)))
    rev = RevUnit(4, "none")
    a, b = x.chunk(2, dim=1)
    a1 = a + rev.f(b)
    torch.testing.assert_close(rev(x), torch.cat((a1, b + rev.g(a1)), dim=1))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_revnet_reconstructs_a_stages_input_from_its_output(dtype, tolerance):
    discrete = build("revnet", n_units=4).to(dtype).eval()
    continuous = build("revnet", n_units=4, continuous=True).to(dtype).eval()
    x = torch.randn(2, 4, 12, 12, dtype=dtype)
    with torch.no_grad():
        stage = discrete.stages[0][1]
        scale = float(x.abs().max())
        assert float((stage.inverse(stage(x)) - x).abs().max()) <= tolerance * scale
        block = continuous.stages[0][1]
        assert float((block.reconstruct_input(block(x)) - x).abs().max()) <= tolerance * scale
    with pytest.raises(ValueError, match="PolyUnit units are not reversible"):
        build("polynet").stages[0][1].inverse(x)


def test_the_discrete_revnet_inverse_in_training_mode_leaves_the_statistics_alone():
    stage = build("revnet", n_units=2).double().train().stages[0][1]
    x = torch.randn(4, 4, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        out = stage(x)
        buffers = {k: v.clone() for k, v in stage.named_buffers()}
        back = stage.inverse(out)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-12)  # batch statistics of the rebuilt halves: the same
    assert all(torch.equal(v, dict(stage.named_buffers())[k]) for k, v in buffers.items())


@pytest.mark.parametrize("name", NAMES)
def test_continuous_forms_refine_exactly_and_freeze_to_the_same_function(name):
    model = build(name, n_units=2, continuous=True, basis="piecewise_linear").double().eval()
    x = X.double()
    with torch.no_grad():
        before = model(x)
        refine(model)
        assert model.stages[0][1].n_steps == 4 and model.stages[0][1].n_basis == 3  # 2 -> 3 nodes
        with cd.nn.manifest(model, None, 2):  # theta(t) unchanged: the old grid gives the old outputs
            torch.testing.assert_close(model(x), before, rtol=0, atol=1e-12)
        frozen = cd.freeze(model)
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-12, atol=1e-12)
        with cd.nn.manifest(model, "rk4", 32):
            smooth = model(x)
        assert smooth.shape == before.shape


def test_the_revnet_block_evaluates_each_half_once_per_step():
    model = build("revnet", n_units=2, continuous=True).eval()
    block = model.stages[0][1]
    calls = []
    template = block.template
    original = template.part
    template.part = lambda i, half, *c: calls.append(i) or original(i, half, *c)
    try:
        block(torch.randn(1, 4, 6, 6))
    finally:
        del template.part
    assert calls == [0, 1, 0, 1]


def test_equal_parameter_configurations_of_the_comparison():
    counts = {name: sum(p.numel() for p in create(name, in_channels=1, alpha=8, n_units=units).parameters())
              for name, units in [("resnet", 2), ("polynet", 2), ("fractalnet", 1), ("revnet", 4)]}
    assert counts["polynet"] == counts["resnet"]
    assert counts["fractalnet"] == pytest.approx(counts["resnet"], rel=0.02)  # two rates per unit, half the units
    assert counts["revnet"] == pytest.approx(counts["resnet"], rel=0.02)  # half-width rates, twice the units


def test_lm_resnet_authors_start_uses_the_stitch_shortcut_as_the_previous_state():
    torch.manual_seed(0)
    model = create("lm_resnet", in_channels=1, num_classes=10, alpha=4, n_units=2, lm_start="shortcut").eval()
    plain = create("lm_resnet", in_channels=1, num_classes=10, alpha=4, n_units=2)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    u = torch.randn(2, 4, 12, 12)
    with torch.no_grad():
        for i, stage in enumerate(model.stages):
            stitch, body = stage[0], stage[1]
            x0 = stitch(u)
            previous = stitch.shortcut(u) if i > 0 else None  # stage 1 does not downsample: a plain start
            x, k = x0, body.k
            for n, unit in enumerate(body.units):
                nxt = x + unit(x) if previous is None else (1 - k[n]) * x + k[n] * previous + unit(x)
                previous, x = x, nxt
            torch.testing.assert_close(stage(u), x, rtol=0, atol=1e-6)
            if i > 0:
                assert float((plain.stages[i](u) - x).abs().max()) > 1e-4  # the two rules differ
            u = x
    with pytest.raises(ValueError, match="lm_start"):
        create("lm_resnet", lm_start="authors")
    with pytest.raises(ValueError, match="lm_start: the authors' shortcut start applies to the discrete"):
        create("lm_resnet", lm_start="shortcut", continuous=True)
    with pytest.raises(ValueError, match="alpha: revnet splits"):
        create("revnet", alpha=3)
    with pytest.raises(ValueError, match="basis"):
        create("revnet", basis="bogus")

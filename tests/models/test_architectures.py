"""PolyNet, FractalNet and RevNet as models (discrete and continuous), and LM-ResNet's authors' start."""

import pytest
import torch

import contdepth as cd
from contdepth.models import FractalUnit, PolyRate, PolyUnit, RevUnit, create
from contdepth.models.image import stage_widths
from contdepth.models.layers import residual_rate
from contdepth.nn import continuous_blocks, manifest, refine

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
    poly = PolyUnit(4, "batch").eval()
    with torch.no_grad():
        for norm in poly.f.norms[1]:  # the second application's norms differ from the first's
            norm.running_mean.uniform_(-1, 1)
            norm.weight.uniform_(0.5, 2)
    f, f1 = poly.f, (lambda y: poly.f.application(1, y))
    assert not torch.allclose(f(x), f1(x))
    torch.testing.assert_close(poly(x), x + f(x) + f1(f(x)))  # the second power with its own norms
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
    # the same convolutions; PolyNet's second application has norms of its own (two per unit, weight and bias)
    second_norms = sum(2 * 2 * 2 * width for width in stage_widths(8, 1))
    assert counts["polynet"] - counts["resnet"] == second_norms
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


def _fit_statistics(module, x, passes):
    """``passes`` training-mode passes on the same batch (no gradients): running statistics settle on it."""
    module.train()
    with torch.no_grad():
        for _ in range(passes):
            trained = module(x)
    return trained


def test_polynet_keeps_a_norm_per_application_so_evaluation_matches_training():
    """PolyNet's BatchNorms are per application: with one shared BN, eval mode fits neither input (the bug at 33 %)."""
    torch.manual_seed(0)
    x = torch.randn(64, 4, 6, 6) * 3 + 1
    unit = PolyUnit(4, "batch", terms=2)
    for m in unit.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: after many passes on one batch, running = batch statistics
    trained = _fit_statistics(unit, x, 20)
    with torch.no_grad():
        evaluated = unit.eval()(x)
    torch.testing.assert_close(evaluated, trained, rtol=0.02, atol=0.02)  # only the unbiased-variance factor 64/63
    assert set(dict(unit.f.named_parameters())) == {"conv1.weight", "conv2.weight", "norms.0.0.weight",
                                                    "norms.0.0.bias", "norms.0.1.weight", "norms.0.1.bias",
                                                    "norms.1.0.weight", "norms.1.0.bias", "norms.1.1.weight",
                                                    "norms.1.1.bias"}
    first, second = unit.f.norms[0][0], unit.f.norms[1][0]  # inputs x and F(x): different statistics
    assert not torch.allclose(first.running_mean, second.running_mean, atol=0.1)


def test_a_shared_norm_would_fail_that_check():
    """The check above can fail: the same passes through one shared BatchNorm give different eval answers."""
    torch.manual_seed(0)
    x = torch.randn(64, 4, 6, 6) * 3 + 1
    f = residual_rate(4, "batch")
    for m in f.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None

    def shared(y):
        return y + f(y) + f(f(y))

    f.train()
    with torch.no_grad():
        for _ in range(20):
            trained = shared(x)
        f.eval()
        evaluated = shared(x)
    assert (evaluated - trained).abs().max() > 0.5


def test_continuous_polynet_samples_each_applications_state_on_its_own():
    torch.manual_seed(0)
    x = torch.randn(32, 4, 6, 6) * 2 + 1
    block = cd.ContinuousBlock(PolyRate(4, "batch", 2), n_basis=2, scheme="polynet")
    trained = _fit_statistics(block, x, 80)  # momentum 0.1: the state settles to 0.9^80 ~ 2e-4
    with torch.no_grad():
        evaluated = block.eval()(x)
    torch.testing.assert_close(evaluated, trained, rtol=0.03, atol=0.03)
    state = dict(block.state_items())
    assert not torch.allclose(state["norms.0.0.running_mean"], state["norms.1.0.running_mean"], atol=0.1)
    # other schemes integrate application 0 (the rate of the state): its norms only
    with torch.no_grad(), block.manifest("rk4", 2):
        before = block(x)
        for name, c in block.state_items():
            if name.startswith("norms.1."):
                c.mul_(3).add_(1)
        torch.testing.assert_close(block(x), before)


def test_a_composing_scheme_refuses_a_shared_norm_in_training_and_too_few_applications():
    torch.manual_seed(0)
    x = torch.randn(4, 4, 6, 6)
    shared = cd.ContinuousBlock(residual_rate(4, "batch"), n_basis=2, scheme="polynet")
    with pytest.raises(ValueError, match="scheme: 'polynet' applies the rate to its own output"):
        shared.train()(x)
    with torch.no_grad():
        assert torch.isfinite(shared.eval()(x)).all()  # evaluation samples nothing: it only reads
    coupled = cd.ContinuousBlock(cd.Coupling(residual_rate(2, "batch"), residual_rate(2, "batch")), n_basis=2,
                                 scheme="polynet")
    with pytest.raises(ValueError, match="scheme: 'polynet' applies the rate to its own output"):
        coupled.train()(x)  # the whole coupled rate on x and F(x): every norm would see both
    stateless = cd.ContinuousBlock(residual_rate(4, "group"), n_basis=2, scheme="polynet")
    assert stateless.train()(x).shape == x.shape  # no statistics to mix
    two = cd.ContinuousBlock(PolyRate(4, "batch", 2), n_basis=2, scheme=cd.NeumannSeries(3))
    for mode in (two.train, two.eval):
        mode()
        with pytest.raises(ValueError, match="asks for application 3 of the rate but the template has 2"):
            two(x)


def test_frozen_continuous_polynet_reads_each_applications_norms():
    model = build("polynet", n_units=2, continuous=True)
    _fit_statistics(model, X, 3)
    model.eval()
    frozen = cd.freeze(model)
    with torch.no_grad():
        torch.testing.assert_close(frozen(X), model(X))
        finer = cd.freeze(model, "polynet", 4)
        with manifest(model, "polynet", 4):
            torch.testing.assert_close(finer(X), model(X))


def test_polynet_refuses_the_adjoint_and_a_frozen_block_checks_terms_and_norms():
    with pytest.raises(ValueError, match="adjoint's backward sweep does not reproduce"):
        build("polynet", n_units=2, continuous=True, gradient="adjoint")
    assert not cd.NeumannSeries(1).composes and cd.NeumannSeries(2).composes
    x = torch.randn(4, 4, 6, 6)
    block = cd.ContinuousBlock(PolyRate(4, "batch", 2), n_basis=2, scheme="polynet").eval()
    with pytest.raises(ValueError, match="asks for application 3 of the rate but the template has 2"):
        cd.freeze(block, cd.NeumannSeries(3), 2)(x)
    shared = cd.freeze(cd.ContinuousBlock(residual_rate(4, "batch"), n_basis=2, scheme="polynet"), eval_mode=False)
    with pytest.raises(ValueError, match="applies the rate to its own output"):
        shared.train()(x)
    cd.freeze(block, eval_mode=False).train()(x)  # its own norms per application: trains


def test_preflight_names_no_model_option_for_a_model_given_in_python():
    from contdepth.train import ConfigError, TrainConfig
    from contdepth.train.trainer import CUSTOM_MODEL, preflight

    model = torch.nn.Sequential(cd.ContinuousBlock(residual_rate(4, "batch"), n_basis=2, scheme="polynet"))
    with pytest.raises(ConfigError, match=r"^model: scheme: 'polynet' applies the rate to its own output"):
        preflight(TrainConfig(model=CUSTOM_MODEL, data="digits"), model)

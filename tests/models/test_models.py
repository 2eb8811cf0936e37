"""Model registry and the image models' structure and invariants."""

import pytest
import torch

import contdepth.nn as cnn
from contdepth.models import ResNet, available_models, create

X = torch.randn(4, 1, 8, 8)


@pytest.mark.parametrize("name", ["continuousnet", "resnet", "lm_resnet", "continuous_mlp"])
def test_every_model_classifies(name):
    model = create(name, in_channels=1, num_classes=7)
    out = model(X)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert model.config == {"name": name, "options": {"in_channels": 1, "num_classes": 7}}


def test_unknown_model_and_option_fail_with_the_choices():
    with pytest.raises(ValueError, match="model: unknown model 'vgg'; choose one of: cgnn, continuous_mlp"):
        create("vgg")
    with pytest.raises(ValueError, match="depth: not an option of model 'continuousnet'; accepted: alpha"):
        create("continuousnet", depth=3)
    with pytest.raises(ValueError, match="norm: must be one of batch, group, none"):
        create("continuousnet", norm="layer")
    with pytest.raises(ValueError, match="n_basis: give one integer or 3"):
        create("continuousnet", n_basis=[1, 2])
    with pytest.raises(ValueError, match="scheme: unknown scheme"):
        create("continuousnet", scheme="rk5")
    with pytest.raises(ValueError, match="survival"):
        create("lm_resnet", survival=0)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_continuousnet_is_invariant_under_refinement_in_eval(norm):
    torch.manual_seed(0)
    model = create("continuousnet", in_channels=1, num_classes=10, n_basis=2, norm=norm).double()
    model.train()
    for _ in range(3):
        model(X.double())
    model.eval()
    with torch.no_grad():
        before = model(X.double())
        cnn.refine(model)
        with cnn.manifest(model, n_steps=2):
            torch.testing.assert_close(model(X.double()), before, rtol=0, atol=1e-10)
    assert [e["n_basis"] for e in cnn.layout(model)] == [4, 4, 4]


def test_continuousnet_with_euler_piecewise_constant_equals_a_resnet_with_scaled_units():
    torch.manual_seed(0)
    net = create("continuousnet", in_channels=1, num_classes=10, n_basis=3, norm="group").double().eval()
    res = create("resnet", in_channels=1, num_classes=10, n_units=3, norm="group").double().eval()
    state = {k: v for k, v in net.state_dict().items() if "coefficients" not in k}
    res.load_state_dict({**res.state_dict(), **state})
    for s in range(3):
        block = net.stages[s][1]
        for k in range(3):
            for name, c in block.coefficient_items():
                value = c[k] / 3 if name == "5.weight" else c[k]  # the last conv carries h = 1/3
                res.stages[s][1].units[k].get_parameter(name).data.copy_(value)
    torch.testing.assert_close(net(X.double()), res(X.double()), rtol=0, atol=1e-10)


def test_layout_round_trip_prepares_a_fresh_model_for_a_refined_state_dict():
    model = create("continuousnet", in_channels=1, num_classes=10, n_basis=1)
    cnn.refine(model)
    cnn.refine(model)
    fresh = create("continuousnet", in_channels=1, num_classes=10, n_basis=1)
    cnn.apply_layout(fresh, cnn.layout(model))
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(X), model(X))


def test_lm_resnet_k_initialisation_and_first_unit_is_plain_residual():
    model = create("lm_resnet", in_channels=1, num_classes=10, n_units=3, k_per_channel=True)
    stage = model.stages[0][1]
    assert stage.k.shape == (3, 1, 16, 1, 1)
    assert torch.all(stage.k <= 0) and torch.all(stage.k >= -0.1)
    # With k = 0 the LM stage is a ResNet stage.
    with torch.no_grad():
        stage.k.zero_()
    stage.eval()
    x = torch.randn(2, 16, 4, 4)
    expected = x
    for unit in stage.units:
        expected = expected + unit(expected)
    torch.testing.assert_close(stage(x), expected)


def test_stochastic_depth_rates_rise_linearly_and_test_time_is_deterministic():
    model = create("lm_resnet", in_channels=1, num_classes=10, n_units=2, survival=0.5)
    rates = [r for s in model.stages for r in s[1].drop_rates]
    assert rates == pytest.approx([1 / 6 * 0.5 * i for i in range(1, 7)])
    model.eval()
    torch.testing.assert_close(model(X), model(X))
    model.train()
    torch.manual_seed(1)
    a = model(X)
    torch.manual_seed(2)
    b = model(X)
    assert not torch.allclose(a, b)


def test_continuous_lm_variant_learns_k():
    model = create("lm_resnet", in_channels=1, num_classes=10, n_units=2, continuous=True, norm="group")
    blocks = cnn.continuous_blocks(model)
    plans = [len(b.plans) for b in blocks]
    out = model(X)
    out.sum().backward()
    ks = [m.k for m in model.modules() if hasattr(m, "k") and isinstance(m.k, torch.nn.Parameter)]
    assert len(ks) == 3 and all(k.grad is not None for k in ks)
    model(X)
    assert [len(b.plans) for b in blocks] == plans  # the plan is built once, not per forward
    assert all(b.scheme.k is k for b, k in zip(blocks, ks))


def test_resnet_has_independent_units():
    model = create("resnet", in_channels=1, num_classes=10, n_units=[1, 2, 3])
    assert isinstance(model, ResNet)
    assert [len(s[1].units) for s in model.stages] == [1, 2, 3]
    w = [u[2].weight for u in model.stages[2][1].units]
    assert not torch.allclose(w[0], w[1])
    assert set(available_models()) >= {"continuousnet", "resnet", "lm_resnet", "continuous_mlp"}


def test_projection_stitch_is_a_strided_1x1_convolution_and_the_identity_where_nothing_changes():
    from torch import nn

    from contdepth.analysis import resnet_as_continuous
    from contdepth.models.layers import ProjectionStitch, Stitch

    torch.manual_seed(0)
    residual = create("continuousnet", in_channels=1, alpha=4, n_basis=2)
    projection = create("continuousnet", in_channels=1, alpha=4, n_basis=2, stitch="projection")
    assert all(isinstance(stage[0], Stitch) for stage in residual.stages)
    assert isinstance(projection.stages[0][0], nn.Identity)  # alpha -> alpha at stride 1: nothing to do
    assert all(isinstance(stage[0], ProjectionStitch) and stage[0].conv.kernel_size == (1, 1)
               and stage[0].conv.stride == (2, 2) for stage in projection.stages[1:])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(projection) < count(residual)
    x = torch.randn(3, 1, 28, 28)
    assert projection(x).shape == (3, 10)
    resnet = create("resnet", in_channels=1, alpha=4, n_units=2, stitch="projection").eval()
    assert torch.equal(resnet_as_continuous(resnet)(x), resnet(x))  # the ODE reading keeps the stitch
    with pytest.raises(ValueError, match="stitch: must be one of residual, projection"):
        create("continuousnet", stitch="pool")


IMAGE_MODELS = [("continuousnet", {}), ("resnet", {}), ("lm_resnet", {}), ("lm_resnet", {"continuous": True}),
                ("polynet", {}), ("fractalnet", {"continuous": True}), ("revnet", {"continuous": True})]


@pytest.mark.parametrize("name, options", IMAGE_MODELS)
def test_an_input_with_other_channels_is_refused_naming_in_channels(name, options):
    model = create(name, alpha=4, **options)  # in_channels defaults to 3
    with pytest.raises(ValueError, match=r"^in_channels: the model was built for 3-channel images \(in_channels=3\), "
                                         r"but the input has 1 channel\(s\) \(shape \(4, 1, 8, 8\)\); build it with "
                                         r"in_channels=1$"):
        model(X)
    with pytest.raises(ValueError, match=r"^input: an image model takes N x C x H x W batches, got shape \(1, 8, 8\)"):
        model(X[0])
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_a_flat_model_names_its_input_size():
    model = create("continuous_mlp", in_features=64)
    with pytest.raises(ValueError, match=r"^in_features: the model was built for 64 values per example .* has 784"):
        model(torch.randn(2, 1, 28, 28))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_the_registry_names_the_builtin_models_as_their_modules_register_them():
    """`BUILTIN_MODELS` lets `train --help` list models without torch: it must match the modules (issue 26)."""
    import importlib

    from contdepth.models import registry

    for module in {m for m, _ in registry.BUILTIN_MODELS.values()}:
        importlib.import_module(module)
    own = {name for name in registry.MODELS.names() if registry.MODELS.get(name).__module__.startswith("contdepth.")}
    assert own == set(registry.BUILTIN_MODELS) == set(registry.MODELS.declared())
    for name, (module, kind) in registry.BUILTIN_MODELS.items():
        assert registry.MODELS.get(name).__module__ == module and registry.model_kind(name) == kind
        assert registry.is_graph_model(name) == (kind == "graph")
    assert registry.available_models(graph=True) == ["cgnn", "gcde", "gcn"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model("polynet")(lambda: None)

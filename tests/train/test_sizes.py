"""The preflight's size arithmetic (`contdepth.train.sizes`) against the real thing: refining a model."""

from __future__ import annotations

import pytest
import torch

from contdepth.models import create
from contdepth.nn import continuous_blocks, refine
from contdepth.train import TrainConfig
from contdepth.train.sizes import check_memory, check_refinements, memory_capacity, refined_bytes


@pytest.mark.parametrize("basis", ["piecewise_constant", "piecewise_linear", "legendre"])
def test_the_counted_sizes_are_those_refinement_gives(basis):
    options = {"alpha": 2, "n_basis": 2, "basis": basis, "in_channels": 1, "num_classes": 10}
    config = TrainConfig(model_options={k: v for k, v in options.items() if k not in ("in_channels", "num_classes")},
                         epochs=3, refine_at=(2, 3))
    with torch.device("meta"):
        counted = refined_bytes(create("continuousnet", **options), config)
    model = create("continuousnet", **options)
    refine(model)
    refine(model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    assert counted == (sum(p.numel() for p in parameters), sum(p.numel() * p.element_size() for p in parameters),
                       sum(b.numel() * b.element_size() for b in model.buffers()))


def test_refinements_and_memory_are_refused_with_the_numbers():
    config = TrainConfig(model_options={"n_basis": 3, "n_steps": 1500}, epochs=3, refine_at=(2, 3))
    with torch.device("meta"):
        model = create("continuousnet", in_channels=1, num_classes=10, n_basis=3, n_steps=1500)
    with pytest.raises(ValueError, match=r"^refine_at: refinement 2 \(at the start of epoch 3\) would give block 0 "
                                         r"\(3 functions, 1500 steps to begin with\) 6,000 steps"):
        check_refinements(model, config)
    check_refinements(model, config.replace(refine_at=(3,)))  # 3,000 steps: fine
    big = TrainConfig(model_options={"alpha": 1_000_000})
    with torch.device("meta"):
        model = create("continuousnet", in_channels=1, num_classes=10, alpha=1_000_000)
    capacity, _ = memory_capacity("cpu")
    with pytest.raises(ValueError, match=r"^model_options: model 'continuousnet' with \{'alpha': 1000000\} has "
                                         r"1,055,000,129,000,010 trainable parameters"):
        check_memory(model, big)
    assert capacity > 2**30  # the machine's memory (or its cgroup's limit) is known here

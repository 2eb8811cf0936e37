"""Which function grows a built-in model in depth (`contdepth.train.grow` asks here).

A model of the user's own grows through its ``grow_depth(method, factor)`` method, returning a
`contdepth.nn.GrownModel`; contdepth's own models are grown by functions that live beside them
(`contdepth.models.gpt_growth`, `contdepth.models.image_growth`) and are found here, by the
model's class, so that the model modules never import their growth modules (which import them).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn


def grower(model: object) -> Callable | None:
    """``grow_depth(method, factor) -> GrownModel`` for ``model``, or ``None`` where it cannot grow.

    The model's own ``grow_depth`` first (a user's model); else the GPT's (`grow_gpt`) or the staged
    image models' (`grow_image`: resnet, lm_resnet, continuousnet).
    """
    if not isinstance(model, nn.Module):
        return None
    own = getattr(model, "grow_depth", None)
    if callable(own):
        return own
    from .gpt import GPT
    from .image import StagedNet

    if isinstance(model, GPT):
        from .gpt_growth import grow_gpt

        return partial(grow_gpt, model)
    if isinstance(model, StagedNet):
        from .image_growth import grow_image

        return partial(grow_image, model)
    return None


__all__ = ["grower"]

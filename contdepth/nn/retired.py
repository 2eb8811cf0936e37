"""Parameters that a basis change replaced, and the optimizer guard that refuses them.

``ContinuousBlock.refine()`` / ``project()`` put *new* coefficient Parameters in the
model.  An optimizer built before still holds the old ones: its ``step()`` would keep
updating tensors that the model no longer uses, and the block would silently never train
again.  Refinement with ``contdepth.train.refine_with_optimizer`` swaps the optimizer
over (and maps its momentum); anything else is a mistake that we answer at the next
``optimizer.step()``: a global step pre-hook, installed once when ``contdepth.nn`` is
imported, raises `RetiredParameterError` when an optimizer holds a retired
Parameter.

Cost: the registry holds weak references only, so a retired Parameter that nobody
holds any more leaves it; while it is empty (the normal case, e.g. after
``refine_with_optimizer``) the hook returns at once, otherwise it is one dict lookup
per parameter, in C (measured on a busy 2-core CPU: 0.2 us per step when empty, 15-35 us
per step for 161 parameter tensors, a ResNet-50's count, when not).
"""

from __future__ import annotations

import weakref
from typing import Iterable

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

# id(parameter) -> weak reference to it.  Keyed by id because a Tensor's ``==`` is
# elementwise, which rules out WeakSet / WeakKeyDictionary.
_RETIRED: dict[int, weakref.ref] = {}


class RetiredParameterError(RuntimeError):
    """An optimizer is about to step parameters that a block's basis change replaced."""


def retire(parameters: Iterable[torch.Tensor]) -> None:
    """Mark ``parameters`` as replaced: an optimizer that still holds one may not step."""
    for p in parameters:
        key = id(p)

        def forget(ref: weakref.ref, key: int = key) -> None:
            if _RETIRED.get(key) is ref:  # not a newer object that reused the id
                _RETIRED.pop(key, None)

        _RETIRED[key] = weakref.ref(p, forget)


def is_retired(p: torch.Tensor) -> bool:
    """Whether ``p`` was replaced by a refine/project and is no longer part of its block."""
    ref = _RETIRED.get(id(p))
    return ref is not None and ref() is p


def _refuse_retired_parameters(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
    """Global optimizer step pre-hook: refuse to step parameters a basis change replaced."""
    if not _RETIRED:
        return None
    retired_ids = _RETIRED.keys()
    if all(retired_ids.isdisjoint(map(id, group["params"])) for group in optimizer.param_groups):
        return None  # the common case, a loop in C; the count below also rules out a reused id
    stale = sum(1 for group in optimizer.param_groups for p in group["params"] if is_retired(p))
    if stale:
        raise RetiredParameterError(
            f"optimizer: holds {stale} parameter(s) that ContinuousBlock.refine() or project() replaced (or a "
            "load_state_dict of another basis size), so the block would never train again; refine with "
            "contdepth.train.refine_with_optimizer(model, optimizer) (it maps the momentum too) or build a new "
            "optimizer after refining or loading"
        )
    return None


_HOOK = register_optimizer_step_pre_hook(_refuse_retired_parameters)

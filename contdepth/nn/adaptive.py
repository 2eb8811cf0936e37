"""Adaptive depth at inference: every block integrated with error control.

A trained ContinuousNet defines an ODE per block; a fixed grid is one way to solve it,
an embedded Runge-Kutta pair with a tolerance is another.  The pair spends evaluations
where the hidden state changes fast and few where it does not, and its step count is a
measurement of how hard each block's ODE is.

    with adaptive_depth(model, rtol=1e-3, atol=1e-4) as record:
        logits = model(x)
    record.evaluations()      # rate evaluations per block, summed over the calls

The statistics are returned through the recorder of the ``with`` statement rather than
kept in counters on the modules, so nothing outlives the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..solvers import ButcherTableau, IntegrationStats, LMResNetScheme, StepController, check_n_steps, get_tableau
from ..common.validate import check_number
from .block import ContinuousBlock
from .integration import Adaptive
from .model_tools import continuous_blocks
from .temporary import Temporary


@dataclass(frozen=True)
class AdaptiveDepth:
    """How to integrate a block adaptively.

    Args:
        scheme: an embedded explicit Runge-Kutta pair (``dopri5``, ``bosh3``) or tableau.
        rtol: relative tolerance: a step is accepted when the RMS of the error estimate
            scaled by ``atol + rtol * |x|`` is at most 1.
        atol: absolute tolerance (see ``rtol``).
        max_steps: attempted steps per block call before [`MaxStepsExceeded`][contdepth.solvers.MaxStepsExceeded].
    """

    scheme: str | ButcherTableau = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    max_steps: int = 10_000
    tableau: ButcherTableau = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tableau = get_tableau(self.scheme)
        if not tableau.is_embedded:
            raise ValueError(f"scheme: {tableau.name!r} has no error estimate; adaptive depth needs an embedded "
                             "pair such as 'dopri5' or 'bosh3'")
        rtol, atol = check_number(self.rtol, "rtol", low=0.0), check_number(self.atol, "atol", low=0.0)
        if rtol == 0 and atol == 0:
            raise ValueError("rtol: rtol and atol cannot both be 0")
        object.__setattr__(self, "rtol", rtol)
        object.__setattr__(self, "atol", atol)
        object.__setattr__(self, "max_steps", check_n_steps(self.max_steps, "max_steps"))
        object.__setattr__(self, "tableau", tableau)


class AdaptiveRecord:
    """What the blocks did inside one [`adaptive_depth`][contdepth.nn.adaptive_depth] context, one list per block.

    ``stats[i]`` holds the [`IntegrationStats`][contdepth.solvers.IntegrationStats] of every call of block ``i`` (one
    per forward pass, e.g. per batch), in call order.
    """

    def __init__(self, blocks: list[ContinuousBlock]) -> None:
        self.blocks = blocks
        self.stats: list[list[IntegrationStats]] = [[] for _ in blocks]

    def calls(self) -> int:
        """Forward passes recorded (calls of the first block)."""
        return len(self.stats[0]) if self.stats else 0

    def evaluations(self) -> list[int]:
        """Rate evaluations per block, summed over the recorded calls."""
        return [sum(s.n_evaluations for s in per_block) for per_block in self.stats]

    def mean_evaluations(self) -> list[float]:
        """Rate evaluations per block and call (a fixed grid's ``block.units`` compares to it)."""
        return [sum(s.n_evaluations for s in calls) / len(calls) if calls else 0.0 for calls in self.stats]

    def mean_steps(self) -> list[float]:
        """Accepted steps per block and call."""
        return [sum(s.n_steps for s in calls) / len(calls) if calls else 0.0 for calls in self.stats]

    def rejected(self) -> list[int]:
        """Rejected steps per block, summed over the recorded calls."""
        return [sum(s.n_rejected for s in per_block) for per_block in self.stats]


def adaptive_depth(model: nn.Module, rtol: float = 1e-3, atol: float = 1e-4, *, scheme: str = "dopri5",
                   max_steps: int = 10_000) -> Temporary[AdaptiveRecord]:
    """Within the ``with`` statement, every ContinuousBlock of ``model`` integrates adaptively.

    Applied at once; returns a [`Temporary`][contdepth.nn.Temporary] whose ``with`` gives the
    [`AdaptiveRecord`][contdepth.nn.AdaptiveRecord] and puts every block's grid back on exit.
    Blocks with a learnable multistep scheme (continuous LM-ResNet) are refused: their
    fixed grid integrates a different equation, ``(1 + k) x' = f``, so an adaptive
    solution of ``x' = f`` would not be the same model.
    """
    setting = AdaptiveDepth(scheme, rtol, atol, max_steps)
    blocks = continuous_blocks(model)
    if not blocks:
        raise ValueError("model: contains no ContinuousBlock to integrate adaptively")
    for block in blocks:
        if isinstance(block.scheme, LMResNetScheme):
            raise ValueError("model: a block uses the LM-ResNet scheme, whose grid integrates (1 + k) x' = f; "
                             "adaptive depth integrates x' = f and would change the model")
    if any(block.integration is not block.grid for block in blocks):
        raise RuntimeError("adaptive_depth: a block is already inside another adaptive_depth context")
    record = AdaptiveRecord(blocks)
    controller = StepController(max_steps=setting.max_steps)
    changes: list[Temporary] = []
    try:
        for block, calls in zip(blocks, record.stats):
            changes.append(block.integrate_with(Adaptive(setting.tableau, setting.rtol, setting.atol, controller,
                                                         calls.append)))
    except BaseException:
        Temporary.all(changes).undo()  # a block that refuses leaves every block on its grid
        raise
    return Temporary.all(changes, record)

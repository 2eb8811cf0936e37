"""``theta(t) = sum_k c_k phi_k(t)``: a block's weights as a function of depth, in a basis.

[`DepthFunction`][contdepth.nn.DepthFunction] holds the coefficients under the template's own
parameter names (in a tree the block registers as ``coefficients``, so ``state_dict`` keys read
``coefficients.<template name>``), the basis and the depth interval. It owns what depends on
them alone: the initial draws, where a depth lies in the basis (the ``(t - t0) / span``
normalisation, written here once), ``theta`` at a depth, the breakpoints, and a change of basis
(refine, project, resize) with its coefficient map for the optimizer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..basis import DepthBasis, apply_matrix
from ..solvers import StageTime
from .coefficient_tree import CoefficientTree
from .retired import retire
from .state_range import DepthKey, depth_key

Tensor = torch.Tensor
Initializer = Callable[[nn.Module], None]


@dataclass(frozen=True)
class CoefficientMap:
    """How a basis change mapped the coefficients: ``new = matrix @ old`` per parameter.

    ``pairs`` lists ``(old_parameter, new_parameter)`` so that per-parameter state
    kept elsewhere (optimizer momentum, Adam moments) can be mapped with the same
    linear operator.
    """

    matrix: np.ndarray
    pairs: tuple[tuple[nn.Parameter, nn.Parameter], ...]


def reset_template_parameters(template: nn.Module) -> None:
    """Redraw every parameter of ``template`` with its modules' own ``reset_parameters``.

    In module order, and a module that defines ``reset_parameters`` redraws its whole subtree: its
    submodules are not visited again. Why: a composite module's own initialisation is the intended
    one (a GPT attention term draws its projections from N(0, 0.02) with zero biases); visiting its
    ``nn.Linear`` children afterwards overwrote that with torch's default, so a continuous model's
    cells were initialised unlike the discrete layers they generalise. Templates whose composite
    modules define no ``reset_parameters`` (every image and graph template) draw exactly as before.
    """
    uncovered, covered = [], []
    for name, module in template.named_modules():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in covered):
            continue  # redrawn by an enclosing module's reset_parameters
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            if name:
                covered.append(name)
            elif any(True for _ in module.children()):
                return  # the template itself redraws everything
        elif any(True for _ in module.parameters(recurse=False)):
            uncovered.append(name or type(module).__name__)
    if uncovered:
        raise ValueError(
            f"template: submodule(s) {', '.join(uncovered)} own parameters but define no "
            "reset_parameters(), so independent draws per basis function are impossible; "
            "add reset_parameters() or pass initializer="
        )


class DepthFunction:
    """The coefficients of ``theta`` (``(n_basis, *shape)`` per template parameter, in `tree`), its basis and interval.

    Not a module itself: `tree` is (the block registers it as ``coefficients``), so the tree's
    names are only the template's own and none can clash with a method here (a template's
    ``key`` or ``position`` layer).
    """

    def __init__(self, basis: DepthBasis, t0: float, t1: float, names: tuple[str, ...],
                 tree: CoefficientTree | None = None) -> None:
        self.basis, self.t0, self.t1, self.names = basis, float(t0), float(t1), tuple(names)
        self.tree = CoefficientTree() if tree is None else tree

    @classmethod
    def drawn(cls, template: nn.Module, basis: DepthBasis, t0: float, t1: float,
              initializer: Initializer | None = None) -> "DepthFunction":
        """``basis.n`` independent draws of the template's parameters as ``theta``'s values at the collocation points.

        So ``theta(t)`` starts with the template's own distribution there and no two basis
        functions start identical. A parameter with ``requires_grad=False`` is a frozen layer:
        ``theta`` holds its own value at every depth (not a fresh draw per function, which
        would be random features nobody asked for) and keeps ``requires_grad=False``.
        """
        given = dict(template.named_parameters())
        function = cls(basis, t0, t1, tuple(given))
        draws: dict[str, list[Tensor]] = {name: [] for name in given}
        work = copy.deepcopy(template)
        with torch.no_grad():
            for _ in range(basis.n):
                (initializer or reset_template_parameters)(work)
                for name, p in work.named_parameters():
                    draws[name].append((p if given[name].requires_grad else given[name]).detach().clone())
        inverse = basis.collocation_inverse()
        for name in function.names:
            values = apply_matrix(inverse, torch.stack(draws[name]))
            function.tree.set(name, nn.Parameter(values, requires_grad=given[name].requires_grad))
        return function

    def items(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(template parameter name, coefficients)`` pairs, in the template's order."""
        for name in self.names:
            yield name, self.tree.get(name)  # type: ignore[misc]

    def position(self, t: float | Fraction) -> Fraction:
        """Depth ``t`` of ``[t0, t1]`` as the basis' position in ``[0, 1]``, exactly."""
        return (Fraction(t) - Fraction(self.t0)) / (Fraction(self.t1) - Fraction(self.t0))

    def key(self, stage: StageTime) -> DepthKey:
        """Where a stage reads ``theta``: its position, from the side the stage names."""
        return depth_key(self.position(stage.exact), stage.left)

    def theta(self, t: float | Fraction, *, left: bool = False) -> dict[str, Tensor]:
        """The template's parameters at depth ``t`` (in ``[t0, t1]``)."""
        position = self.position(t)
        return {name: self.basis.evaluate(c, position, left=left) for name, c in self.items()}

    def breakpoints(self) -> tuple[Fraction, ...]:
        """Depths in ``(t0, t1)`` where ``theta`` may jump or bend: no adaptive step crosses one."""
        t0, span = Fraction(self.t0), Fraction(self.t1) - Fraction(self.t0)
        return tuple(t0 + span * bp for bp in self.basis.breakpoints)

    @torch.no_grad()
    def change_basis(self, target: DepthBasis, matrix: np.ndarray) -> CoefficientMap:
        """Map the coefficients onto ``target`` (``new = matrix @ old``); the old parameters are retired."""
        pairs = []
        for name, old in list(self.items()):
            new = nn.Parameter(apply_matrix(matrix, old.detach()), requires_grad=old.requires_grad)
            self.tree.set(name, new)
            pairs.append((old, new))
        retire(old for old, _ in pairs)  # an optimizer still holding them now fails at step()
        self.basis = target
        return CoefficientMap(matrix, tuple(pairs))


__all__ = ["CoefficientMap", "DepthFunction", "Initializer", "reset_template_parameters"]

"""Templates applied several times in one step, with normalisation of their own per application.

PolyNet's poly-N unit ``x + F(x) + F(F(x)) + ...`` applies one residual ``F`` to ``x`` and
then to its own output. Its convolutions are shared between the applications; its
BatchNorm layers are not: PolyNet keeps one per application (Zhang et al. 2017, the
"PolyInception" modules). That is not a detail. ``F(x)`` is distributed nothing like
``x``, and one BatchNorm seeing both keeps running statistics that average the two and
fit neither: a poly-2 network with shared BatchNorm trains (batch statistics) and then
evaluates (running statistics) at chance.

A template is *repeated* when it offers

- ``applications``: a tuple with, per application ``j``, the name of the submodule that
  holds that application's own normalisation (its state is sampled only by application
  ``j``; state outside all of them is sampled by every application);
- ``application(j, x, *context)``: the rate of the ``j``-th application.

``template(x, *context)`` must be application 0, the rate of the state: it is what every
other scheme evaluates, so the ODE the block integrates is ``dx/dt = application 0``. A
:class:`~contdepth.nn.ContinuousBlock` with such a template offers
``rate.application(stage, x, j)`` to schemes that compose the rate
(:class:`~contdepth.solvers.NeumannSeries`, whose ``composes`` is true).
"""

from __future__ import annotations

from torch import nn


def is_repeated(template: nn.Module) -> bool:
    """Whether ``template`` keeps normalisation of its own per application (PolyNet's rates)."""
    names = getattr(template, "applications", None)
    return (isinstance(names, tuple) and len(names) > 0 and all(isinstance(n, str) for n in names)
            and callable(getattr(template, "application", None)))

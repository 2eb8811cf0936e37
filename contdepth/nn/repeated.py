"""Templates applied several times in one step, with normalisation of their own per application.

PolyNet's poly-N unit ``x + F(x) + F(F(x)) + ...`` applies one residual ``F`` to ``x`` and
then to its own output. Its convolutions are shared between the applications; its
BatchNorm layers are not: PolyNet keeps one per application (Zhang et al. 2017, the
"PolyInception" modules). That is not a detail. ``F(x)`` is distributed nothing like
``x``, and one BatchNorm seeing both keeps running statistics that average the two and
fit neither: a poly-2 network with shared BatchNorm trained to 83.5 % (batch statistics)
and evaluated at 33 % (running statistics) on Fashion-MNIST.

A template is *repeated* when it offers

- ``applications``: a tuple with, per application ``j``, the name of the submodule that
  holds that application's own normalisation (its state is sampled only by application
  ``j``; a composing scheme refuses to train a template with state outside all of them,
  which every application would update);
- ``application(j, x, *context)``: the rate of the ``j``-th application.

``template(x, *context)`` must be application 0, the rate of the state: it is what every
other scheme evaluates, so the ODE the block integrates is ``dx/dt = application 0``. A
[`ContinuousBlock`][contdepth.nn.ContinuousBlock] with such a template offers
``rate.application(stage, x, j)`` to schemes that compose the rate
([`NeumannSeries`][contdepth.solvers.NeumannSeries], whose ``composes`` is true).
"""

from __future__ import annotations

from typing import Iterable

from torch import nn


def is_repeated(template: nn.Module) -> bool:
    """Whether ``template`` keeps normalisation of its own per application (PolyNet's rates)."""
    names = getattr(template, "applications", None)
    return (isinstance(names, tuple) and len(names) > 0 and all(isinstance(n, str) for n in names)
            and callable(getattr(template, "application", None)))


def shared_state(template: nn.Module, state_names: Iterable[str]) -> tuple[str, ...]:
    """The state a composing scheme's applications would all update: all of it, unless ``template`` is repeated.

    For a repeated template, the state outside every application's submodule.
    """
    if not is_repeated(template):
        return tuple(state_names)
    prefixes = tuple(prefix + "." for prefix in template.applications)
    return tuple(name for name in state_names if not name.startswith(prefixes))


def check_composing_training(scheme_name: str, template: nn.Module, state_names: Iterable[str]) -> None:
    """Refuse to train a composing scheme where one normalisation would see more than one application.

    Its running statistics would average ``x``, ``F(x)``, ... and fit none of them, and
    evaluation (which reads them) would be quietly wrong. Evaluation itself is allowed.
    """
    shared = shared_state(template, state_names)
    if shared:
        listed = ", ".join(shared[:3]) + (f" and {len(shared) - 3} more" if len(shared) > 3 else "")
        raise ValueError(
            f"scheme: {scheme_name!r} applies the rate to its own output, so in training the statistics {listed} "
            "would be updated by every application and fit none of them; give the template a normalisation of its "
            "own per application (a repeated template, contdepth.nn.repeated: model polynet with continuous=true "
            "builds one), use a stateless norm (norm group), or train with another scheme"
        )


def check_component_index(kind: str, i: int, count: int) -> None:
    """Refuse a scheme's request for component ``i`` (a ``part`` or an ``application``) of a template that has ``count``."""
    if not 0 <= i < count:
        raise ValueError(f"scheme: the scheme asks for {kind} {i + 1} of the rate but the template has {count}; "
                         f"build the template with more {kind}s or use a scheme with fewer terms")

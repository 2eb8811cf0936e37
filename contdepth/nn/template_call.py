"""Calling a block's template with the weights of one depth: a lean ``functional_call``.

``R(theta(t), x)`` needs the template evaluated with parameters that are not its own.
`torch.func.functional_call` does that, but its per-call bookkeeping costs 40-70%
on small templates. [`TemplateCall`][contdepth.nn.TemplateCall] writes the values straight into the template's
parameter and buffer slots for one call and puts the meta placeholders back afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from ..solvers import check_rate_output
from .slots import tensor_slot

Tensor = torch.Tensor


class TemplateCall:
    """Evaluates ``template`` (an architecture on the meta device) with given tensors.

    Args:
        template: the module; its parameters and buffers are only placeholders.
        parameter_names: the template's parameters without duplicates, in the order in
            which `__call__` receives their values (tied parameters appear once).
        state_names: the floating-point buffers (normalisation statistics), likewise.
        shared_names: the other buffers (``num_batches_tracked``), likewise.

    A template must not be called from several threads at once: the values live in its
    slots for the duration of a call.
    """

    def __init__(self, template: nn.Module, parameter_names: tuple[str, ...], state_names: tuple[str, ...],
                 shared_names: tuple[str, ...]) -> None:
        self.template = template
        index = {name: i for i, name in enumerate(parameter_names)}
        canonical = {id(p): index[name] for name, p in template.named_parameters()}
        self._parameter_slots = [(*tensor_slot(template, name, "parameter"), canonical[id(p)])
                                 for name, p in template.named_parameters(remove_duplicate=False)]
        self._state_slots = [(*tensor_slot(template, name, "buffer"), i) for i, name in enumerate(state_names)]
        self._shared_slots = [(*tensor_slot(template, name, "buffer"), i) for i, name in enumerate(shared_names)]
        self._placeholders = [[table[leaf] for table, leaf, _ in slots]
                              for slots in (self._parameter_slots, self._state_slots, self._shared_slots)]

    def __call__(self, x: Tensor, values: tuple[Tensor, ...], state: tuple[Tensor, ...] | None,
                 shared: list[Tensor], context: tuple = (), component: tuple[str, int] | None = None) -> Tensor:
        """``template(x, *context)`` with ``values`` as parameters, ``state`` and ``shared`` as buffers.

        ``state=None`` leaves the placeholder statistics in place (a template without any).
        ``component=("part", i)`` calls ``template.part(i, x, *context)`` instead: one half's
        rate of a partitioned template ([`Coupling`][contdepth.nn.Coupling]);
        ``("term", i)`` calls ``template.term(i, x, *context)``: term ``i`` of a
        [`Terms`][contdepth.nn.Terms] template; ``("application", j)`` calls
        ``template.application(j, x, *context)``: the ``j``-th
        application of a repeated template (`contdepth.nn.repeated`).
        The output is checked to be a rate for ``x`` (same shape and dtype).
        """
        for table, leaf, i in self._parameter_slots:
            table[leaf] = values[i]
        if state is not None:
            for table, leaf, i in self._state_slots:
                table[leaf] = state[i]
        for table, leaf, i in self._shared_slots:
            table[leaf] = shared[i]
        try:
            if component is None:
                out = self.template(x, *context)
            else:
                kind, i = component
                out = getattr(self.template, kind)(i, x, *context)
        finally:
            for slots, placeholders in zip((self._parameter_slots, self._state_slots, self._shared_slots),
                                           self._placeholders):
                for (table, leaf, _), placeholder in zip(slots, placeholders):
                    table[leaf] = placeholder
        if not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype:
            check_rate_output(out, x, "template")  # says what is wrong (or accepts an autocast dtype)
        return out

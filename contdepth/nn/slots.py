"""The one place contdepth writes into a module's own tensor tables (``Module._parameters`` / ``_buffers``).

Why it exists: a block evaluates its template hundreds of times per forward pass with other
tensors in the template's slots (``theta`` at each stage). ``torch.func.functional_call`` does
exactly this, swapping the tensors in and out through the same tables, but with a per-call
cost (it walks and validates the whole module tree every time) that a fixed-grid pass of small
convolutions feels. [`TemplateCall`][contdepth.nn.TemplateCall] therefore resolves each slot once
and writes it directly. The contract, kept here only:

* a slot is ``(table, leaf)``: the owner's parameter or buffer dict and the tensor's name in it;
* values written are restored to the placeholders before the call returns (also on error);
* nothing else in contdepth reads or writes these tables: everywhere else the public
  ``register_parameter``, ``setattr``, ``named_parameters``/``named_buffers`` do the job.
"""

from __future__ import annotations

from torch import nn


def tensor_slot(template: nn.Module, name: str, kind: str) -> tuple[dict, str]:
    """``(owner's parameter or buffer table, leaf name)`` of a dotted tensor name; ``kind``: parameter or buffer."""
    owner_name, _, leaf = name.rpartition(".")
    owner = template.get_submodule(owner_name) if owner_name else template
    if kind == "parameter":
        return owner._parameters, leaf
    if kind == "buffer":
        return owner._buffers, leaf
    raise ValueError(f"kind: must be parameter or buffer, got {kind!r}")


__all__ = ["tensor_slot"]

"""A module tree that holds a block's coefficients under the template's own parameter names."""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


class CoefficientTree(nn.Module):
    """Holds coefficients under the template's own parameter names (``0.weight`` ...)."""

    def set(self, name: str, value: nn.Parameter) -> None:
        *path, leaf = name.split(".")
        node: nn.Module = self
        for part in path:
            if part not in node._modules:
                node.add_module(part, CoefficientTree())
            node = node._modules[part]  # type: ignore[assignment]
        if leaf in node._parameters:
            del node._parameters[leaf]
        node.register_parameter(leaf, value)

    def set_buffer(self, name: str, value: Tensor) -> None:
        *path, leaf = name.split(".")
        node: nn.Module = self
        for part in path:
            if part not in node._modules:
                node.add_module(part, CoefficientTree())
            node = node._modules[part]  # type: ignore[assignment]
        node.register_buffer(leaf, value)

    def get(self, name: str) -> Tensor:
        # Plain attribute access (not get_parameter) so that torch.func.functional_call,
        # which swaps in ordinary tensors, works on a whole block too.
        node: nn.Module | Tensor = self
        for part in name.split("."):
            node = getattr(node, part)
        return node  # type: ignore[return-value]

    def extra_repr(self) -> str:
        tensors = {**self._parameters, **self._buffers}
        return ", ".join(f"{k}: {tuple(v.shape)}" for k, v in tensors.items())

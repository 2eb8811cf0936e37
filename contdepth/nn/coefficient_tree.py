"""A module tree that holds a block's coefficients under the template's own parameter names."""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


class CoefficientTree(nn.Module):
    """Holds coefficients under the template's own parameter names (``0.weight`` ...)."""

    def _node(self, path: list[str]) -> nn.Module:
        """The tree node at ``path``, made where missing."""
        node: nn.Module = self
        for part in path:
            child = getattr(node, part, None)
            if not isinstance(child, nn.Module):
                child = CoefficientTree()
                node.add_module(part, child)
            node = child
        return node

    def set(self, name: str, value: nn.Parameter) -> None:
        *path, leaf = name.split(".")
        node = self._node(path)
        if leaf in dict(node.named_parameters(recurse=False)):
            delattr(node, leaf)
        node.register_parameter(leaf, value)

    def set_buffer(self, name: str, value: Tensor) -> None:
        *path, leaf = name.split(".")
        self._node(path).register_buffer(leaf, value)

    def get(self, name: str) -> Tensor:
        # Plain attribute access (not get_parameter) so that torch.func.functional_call,
        # which swaps in ordinary tensors, works on a whole block too.
        node: nn.Module | Tensor = self
        for part in name.split("."):
            node = getattr(node, part)
        return node  # type: ignore[return-value]

    def extra_repr(self) -> str:
        tensors = {**dict(self.named_parameters(recurse=False)), **dict(self.named_buffers(recurse=False))}
        return ", ".join(f"{k}: {tuple(v.shape)}" for k, v in tensors.items())

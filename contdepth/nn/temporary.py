"""One mechanism for temporary settings: applied at once, and, used as a context manager, undone on exit.

``block.manifest("rk4", 8)``, ``block.integrate_with(strategy)``, ``manifest(model, ...)`` and
``adaptive_depth(model)`` all return a [`Temporary`][contdepth.nn.Temporary]: the change is made
when the call returns (so ``block.manifest("euler", 16)`` on its own switches the block), and
``with`` puts back what was there before, also after an exception.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class Temporary(Generic[T]):
    """A change already applied; ``with`` gives `value` and calls `undo` on exit (once)."""

    def __init__(self, undo: Callable[[], None], value: T = None) -> None:  # type: ignore[assignment]
        self._undo: Callable[[], None] | None = undo
        self.value = value

    @classmethod
    def all(cls, changes: Iterable["Temporary"], value: T = None) -> "Temporary[T]":  # type: ignore[assignment]
        """Several changes as one, undone in reverse order (every one, even if one of them fails)."""
        changes = list(changes)

        def undo() -> None:
            error: BaseException | None = None
            for change in reversed(changes):
                try:
                    change.undo()
                except BaseException as exc:  # noqa: BLE001  (undo the rest, then re-raise the first)
                    error = error or exc
            if error is not None:
                raise error

        return cls(undo, value)

    def undo(self) -> None:
        """Put back what was there before (a second call does nothing)."""
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()

    def __enter__(self) -> T:
        return self.value

    def __exit__(self, *exc: object) -> None:
        self.undo()


__all__ = ["Temporary"]

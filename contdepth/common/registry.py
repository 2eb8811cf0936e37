"""One registry shape for everything contdepth looks up by name: models, schemes, bases, datasets.

Why one class: the four tables had four shapes (a decorator here, ``overwrite=`` there, one
table lazy and three eager, four wordings of "unknown name"). A `Registry` gives all of them
the same rules, which users meet when they register their own:

* a name is a plain name: a letter, then letters, digits, ``_`` or ``-`` (at most 64), so it
  works unquoted as a flag value, a YAML key and a folder name;
* a name is registered once; replacing one takes ``overwrite=True``, so a typo cannot
  silently replace a built-in;
* an unknown name is one line that names the option, lists the choices and suggests the
  closest (``"model: unknown model 'resnt'; choose one of: ...; did you mean 'resnet'?"``);
* a built-in can be *declared* by name with the module that registers it (`Registry.declare`):
  it is listed at once and its module is imported when it is first used, so
  ``contdepth train --help`` lists the models and bases without importing torch.

This module imports nothing from torch (nor anything outside `contdepth.common`).
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Callable, Generic, Iterable, Iterator, NamedTuple, TypeGuard, TypeVar

from .errors import OptionError
from .validate import show

T = TypeVar("T")

#: The longest name a registry accepts.
MAX_NAME_LENGTH = 64
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REST = _FIRST | frozenset("0123456789_-")


def is_plain_name(name: object) -> TypeGuard[str]:
    """A letter, then letters, digits, ``_`` or ``-``, at most 64 in all (ASCII only).

    Written without a regular expression: compiling one at import cost milliseconds, and
    ``contdepth --help`` imports this module.
    """
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and name[0] in _FIRST
            and all(c in _REST for c in name))


class _Entry(NamedTuple):  # NamedTuples, not dataclasses: `--help` imports this module, so it must be cheap
    value: object
    tags: frozenset[str]


class _Declared(NamedTuple):
    module: str
    tags: frozenset[str]


class Registry(Generic[T]):
    """Values by name, with the checks and messages every contdepth registry shares.

    Args:
        kind: what is registered, in messages: ``"model"``, ``"scheme"``.
        option: the option an unknown name is reported under (default: ``kind``); the dataset
            registry reports ``"name"``, the argument of `contdepth.data.load`.
        normalize: maps a name to its key (``"Fashion-MNIST"`` -> ``"fashion_mnist"``); default: none.

    Tags are free-form labels an entry carries (``"graph"`` for a node-classification model or
    dataset), readable for a declared built-in before its module is imported.
    """

    def __init__(self, kind: str, *, option: str | None = None,
                 normalize: Callable[[str], str] | None = None) -> None:
        self.kind = kind
        self.option = option or kind
        self._normalize = normalize
        self._entries: dict[str, _Entry] = {}
        self._declared: dict[str, _Declared] = {}
        # every built-in its module has registered: a module is imported once per process, so
        # `kept` puts these back even when they arrived (or were replaced) inside its scope
        self._arrived: dict[str, _Entry] = {}

    # --- names -------------------------------------------------------------------------------
    def key(self, name: object) -> str | None:
        """The key ``name`` is stored under, or ``None`` for a value that is not a string."""
        if not isinstance(name, str):
            return None
        return self._normalize(name) if self._normalize is not None else name

    def names(self) -> list[str]:
        """Every name, built-ins declared but not yet imported included, sorted; imports nothing."""
        return sorted(set(self._entries) | set(self._declared))

    def declared(self) -> dict[str, str]:
        """The declared built-ins: name -> the module whose import registers it."""
        return {name: d.module for name, d in self._declared.items()}

    def tags(self, name: str) -> frozenset[str]:
        """The tags of ``name`` (a declared built-in's without importing it); unknown -> `OptionError`."""
        key = self.key(name)
        if key in self._entries:
            return self._entries[key].tags
        if key in self._declared:
            return self._declared[key].tags  # type: ignore[index]
        raise self.unknown(name)

    def __contains__(self, name: object) -> bool:
        key = self.key(name)
        return key in self._entries or key in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} names)"

    # --- registering ---------------------------------------------------------------------------
    def declare(self, name: str, module: str, *, tags: Iterable[str] = ()) -> None:
        """Name a built-in that ``module`` registers when imported: listed now, imported on first `get`."""
        key = self._checked_key(name)
        if key in self._declared or key in self._entries:
            raise OptionError("name", f"a {self.kind} called {key!r} is already declared or registered")
        self._declared[key] = _Declared(module, frozenset(tags))

    def register(self, name: str, value: T, *, overwrite: bool = False, tags: Iterable[str] = ()) -> T:
        """Make ``value`` available as ``name`` and return it; a taken name needs ``overwrite=True``.

        A declared built-in's name is taken until its own module registers it (an import never
        fails because a user replaced a built-in first: the user's value then stays).
        """
        key = self._checked_key(name)
        entry = _Entry(value, frozenset(tags))
        declared = self._declared.get(key)
        if declared is not None and getattr(value, "__module__", None) == declared.module:
            self._arrived[key] = entry
            if key in self._entries:  # replaced by the user before the module was imported
                return value
        elif (key in self._entries or declared is not None) and not overwrite:
            raise OptionError("name", f"a {self.kind} called {key!r} is already registered; "
                                      f"pass overwrite=True to replace it")
        self._entries[key] = entry
        return value

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its value (a plugin's, a test's); built-ins stay."""
        key = self.key(name)
        if key in self._declared:
            raise OptionError("name", f"{key!r} is a built-in {self.kind} and stays registered; "
                                      f"register another under its name with overwrite=True")
        if key not in self._entries:
            raise self.unknown(name)
        return self._entries.pop(key).value  # type: ignore[arg-type]

    @contextmanager
    def kept(self) -> Iterator["Registry[T]"]:
        """Put the entries back as they were on exit: what a test or a docs example registers is gone after it.

        Built-ins that their module registered meanwhile stay (the module will not be imported again).
        """
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = {**{k: e for k, e in self._arrived.items() if k not in saved}, **saved}

    # --- looking up ----------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The value registered as ``name``; a declared built-in's module is imported on first use."""
        key = self.key(name)
        if key not in self._entries and key in self._declared:
            module = self._declared[key].module  # type: ignore[index]
            importlib.import_module(module)  # registers it
            if key not in self._entries:
                raise RuntimeError(f"{self.option}: importing {module} did not register the built-in "
                                   f"{self.kind} {key!r}")
        entry = self._entries.get(key) if key is not None else None
        if entry is None:
            raise self.unknown(name)
        return entry.value  # type: ignore[return-value]

    def unknown(self, name: object) -> OptionError:
        """The one-line error for a name that is not registered (for callers that check ``in`` first)."""
        choices = self.names()
        message = f"unknown {self.kind} {show(name)}; choose one of: {', '.join(choices)}"
        key = self.key(name)
        if key and len(key) <= MAX_NAME_LENGTH:  # a hostile 100,000-character name gets no difflib search
            import difflib  # only on this error path: importing the registry stays cheap

            close = difflib.get_close_matches(key, choices, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        return OptionError(self.option, message)

    def _checked_key(self, name: object) -> str:
        key = self.key(name)
        if not is_plain_name(key):
            raise OptionError("name", f"a {self.kind} name must be a letter, then letters, digits, '_' or '-' "
                                      f"(at most 64), got {show(name)}")
        return key


__all__ = ["MAX_NAME_LENGTH", "Registry", "is_plain_name"]

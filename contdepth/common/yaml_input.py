"""The one reader of YAML: specs, configs, stored specs of suites, ``KEY=VALUE`` options.

Why one reader: YAML is a larger language than the JSON-like values options take, and each
extra is a way for a file from anyone to hang or crash the reader:

* **aliases** (``*a``) repeat a node without repeating its text: nine levels of nine
  aliases (a few hundred bytes, the "billion laughs") stand for 9**9 values. The loader
  shares the repeated node, so loading is quick, but everything after it (merging options,
  checking them, writing them as JSON) walks the expanded tree and runs until memory is
  gone. Anchors are useful (one arm's options reused by another), so they are not refused;
  instead every alias counts as the nodes it stands for, and a document that expands past
  `MAX_NODES` is refused. An alias inside the node it names (a cycle) is refused too. Text is
  counted the same way: an alias of a long string repeats all of its characters (a 500 KB
  string repeated by 100,000 aliases is 50 GB in an error message's ``repr`` or a record), so
  the scalars' characters, aliases expanded, may be at most `MAX_EXPANDED_CHARS`.
* **depth**: the composer recurses once per nesting level, so a 10,000-level document was a
  ``RecursionError``. Depth (aliases expanded) is measured on the event stream, which the
  parser produces without recursion, *before* anything is composed: at most `MAX_DEPTH`.
* **size**: at most `MAX_YAML_BYTES` of text.
* **types**: timestamps (``2024-01-01``), ``!!binary``, ``!!set``, ``!!omap``, ``!!python/...``
  and local tags build values no option takes (and that JSON cannot store, so a suite's
  record could not be written). Only the JSON-like types are accepted: null, booleans,
  integers, floats, strings, lists and mappings (and the merge key ``<<``); anything else
  is refused with its line, and quoting it makes it text.
* **floats**: YAML 1.1 reads ``1e-3`` and ``1e308`` (no dot) as *strings*; as in YAML 1.2
  and JSON they are floats here, so ``--data-option test_fraction=1e-1`` is a number.

Every problem is one `OptionError` naming the file (or the option) and the line.
The safe loader is used (libyaml's C one where installed): no Python object is ever built.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import OptionError
from .files import read_regular_text

#: The most text one YAML input may hold (a spec with a hundred arms is a few kilobytes).
MAX_YAML_BYTES = 1 << 20
#: The deepest nesting, aliases expanded (a spec needs five levels: arms.a.model_options.n_basis[0]).
MAX_DEPTH = 64
#: The most values (scalars and collections), every alias counted as the nodes it stands for.
MAX_NODES = 100_000
#: The most characters of scalars (keys and values), every alias counted as the text it repeats:
#: no more than a document without aliases may hold.
MAX_EXPANDED_CHARS = MAX_YAML_BYTES
#: The longest integer literal: far above any count (2**63 has 19 digits), far below Python's 4,300-digit limit.
MAX_INT_DIGITS = 100

_CORE = "tag:yaml.org,2002:"
#: The tags of the JSON-like values (and the merge key ``<<``, which only combines mappings).
PLAIN_SCALAR_TAGS = frozenset(_CORE + t for t in ("null", "bool", "int", "float", "str", "merge"))
#: The scalar tags whose text must read as their type when a document writes them explicitly (``!!int``).
_TYPED_SCALAR_TAGS = frozenset(_CORE + t for t in ("bool", "int", "float"))
_COLLECTION_TAGS = {"sequence": _CORE + "seq", "mapping": _CORE + "map"}
# YAML 1.2 / JSON floats that YAML 1.1 leaves as text: an exponent with no dot (1e-3, 2E+5).
_FLOAT_NO_DOT = re.compile(r"[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+\Z")  # \Z: "$" passes a final newline
_NAMES = {"timestamp": "a date or time", "binary": "binary data", "set": "a set", "omap": "an ordered mapping",
          "pairs": "a list of pairs", "value": "a '=' value"}


@lru_cache(maxsize=1)
def _loader_class() -> type:
    """The safe loader (C if available) with YAML 1.2 floats; built on first use (``yaml`` is
    imported only when YAML is read, not for ``contdepth --help``)."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        """Safe loading, and ``1e-3`` is a float."""

    Loader.add_implicit_resolver(_CORE + "float", _FLOAT_NO_DOT, list("-+0123456789"))
    return Loader


@lru_cache(maxsize=1)
def _dumper_class() -> type:
    """The safe dumper, knowing the same floats as `_loader_class`: text such as ``'1e5'`` is quoted."""
    import yaml

    class Dumper(yaml.SafeDumper):  # type: ignore[misc, valid-type]
        """Safe dumping whose output `load_yaml_text` reads back as it was."""

    Dumper.add_implicit_resolver(_CORE + "float", _FLOAT_NO_DOT, list("-+0123456789"))
    return Dumper


def dump_yaml(value: Any, **options: Any) -> str:
    """``value`` as YAML that `load_yaml_text` reads back as ``value`` (``yaml.safe_dump``'s ``options``).

    Why not ``yaml.safe_dump``: it writes YAML 1.1, where ``1e5`` is text, so it leaves the
    string ``"1e5"`` unquoted; read back here (YAML 1.2 floats) it became the number 100000.0,
    and a suite named ``1e5`` (an arm ``'1e3'``, a description ``"2e3"``) could not be read
    back from its own ``spec.yaml``. Every YAML contdepth writes to read again goes through here.
    """
    import yaml

    return yaml.dump(value, Dumper=_dumper_class(), **options)


def load_yaml_text(text: str, source: str, *, limit: int = MAX_YAML_BYTES) -> Any:
    """The value of the YAML document ``text``, after the checks of the module docstring.

    ``source`` names the input in errors: a file's path, or an option (``--model-option alpha``).
    An empty document is ``None``.
    """
    import yaml

    if not isinstance(text, str):
        raise OptionError(source, f"YAML input must be text, got {type(text).__name__}")
    if len(text) > limit:  # characters; a file's bytes are bounded by its reader
        raise OptionError(source, f"is {len(text):,} characters of YAML, more than the {limit:,} it may be")
    loader_class = _loader_class()
    try:
        _check_events(loader_class, text, source, max(limit, MAX_EXPANDED_CHARS))
        loader = loader_class(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except OptionError:
        raise
    except yaml.YAMLError as exc:
        raise OptionError(source, f"not valid YAML: {_one_line(exc)}") from None
    except (ValueError, RecursionError) as exc:  # a value Python cannot convert: one line all the same
        raise OptionError(source, f"cannot read a value: {_first_line(str(exc))}") from None


def load_yaml_file(path: str | Path, what: str = "a YAML file", *, limit: int = MAX_YAML_BYTES) -> Any:
    """The value of the YAML file ``path``: a regular file of at most ``limit`` bytes, UTF-8 text,
    through `load_yaml_text`. Errors start with the path."""
    path = Path(path)
    return load_yaml_text(read_regular_text(path, what, limit), str(path), limit=limit)


def _check_events(loader_class: type, text: str, source: str, max_chars: int = MAX_EXPANDED_CHARS) -> None:
    """Depth, expanded size, cycles and tags, from the parser's events (no recursion, nothing built)."""
    import yaml

    loader = loader_class(text)
    # One entry per open collection: [anchor, nodes inside (aliases expanded), height of its children,
    # characters of its scalars (aliases expanded)].
    stack: list[list[Any]] = []
    sizes: dict[str, tuple[int, int, int]] = {}  # anchor -> (nodes, height, characters) of the node it names
    total = 0
    total_chars = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                if any(entry[0] == event.anchor for entry in stack):
                    raise OptionError(source, f"{_where(event)}: alias *{event.anchor} refers to a node that "
                                              "contains it (a cycle)")
                nodes, height, chars = sizes.get(event.anchor, (1, 0, 0))  # an undefined alias: the composer says so
            elif isinstance(event, yaml.ScalarEvent):
                _check_anchor(event, sizes, stack, source)
                _check_scalar_tag(loader, event, source)
                nodes, height, chars = 1, 0, len(event.value)
            elif isinstance(event, yaml.CollectionStartEvent):
                _check_anchor(event, sizes, stack, source)
                kind = "sequence" if isinstance(event, yaml.SequenceStartEvent) else "mapping"
                if event.tag not in (None, "!", _COLLECTION_TAGS[kind]):
                    raise OptionError(source, f"{_where(event)}: {_tag_words(event.tag)} is not a value any "
                                              f"option takes; only plain lists and mappings")
                stack.append([event.anchor, 1, 0, 0])
                total += 1
                if len(stack) > MAX_DEPTH:
                    raise OptionError(source, f"{_where(event)}: nested more than {MAX_DEPTH} levels deep")
                continue
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, nodes, inner, chars = stack.pop()
                height = inner + 1
                if anchor is not None:
                    sizes[anchor] = (nodes, height, chars)
                if stack:
                    stack[-1][1] += nodes
                    stack[-1][2] = max(stack[-1][2], height)
                    stack[-1][3] += chars
                continue
            else:  # stream and document events
                continue
            if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                sizes[event.anchor] = (1, 0, chars)
            total += nodes
            total_chars += chars
            if len(stack) + height > MAX_DEPTH:
                raise OptionError(source, f"{_where(event)}: alias *{event.anchor} nests more than "
                                          f"{MAX_DEPTH} levels deep")
            if stack:
                stack[-1][1] += nodes
                stack[-1][2] = max(stack[-1][2], height)
                stack[-1][3] += chars
            if total > MAX_NODES:
                raise OptionError(source, f"{_where(event)}: more than {MAX_NODES:,} values with aliases "
                                          "expanded (an alias counts as every value it repeats)")
            if total_chars > max_chars:  # never below the text a document may hold without aliases
                raise OptionError(source, f"{_where(event)}: more than {max_chars:,} characters of text "
                                          "with aliases expanded (an alias counts as all the text it repeats)")
    finally:
        loader.dispose()


def _check_anchor(event: Any, sizes: dict, stack: list, source: str) -> None:
    """An anchor defined twice: which one an alias means would depend on the reader."""
    if event.anchor is not None and (event.anchor in sizes or any(entry[0] == event.anchor for entry in stack)):
        raise OptionError(source, f"{_where(event)}: anchor &{event.anchor} is defined twice")


def _check_scalar_tag(loader: Any, event: Any, source: str) -> None:
    import yaml

    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    value = event.value if len(event.value) <= 40 else event.value[:37] + "..."
    if tag not in PLAIN_SCALAR_TAGS:
        raise OptionError(source, f"{_where(event)}: {value!r} is {_tag_words(tag)}, not a value any option takes "
                                  "(quote it to make it text)")
    if tag == _CORE + "int" and len(event.value) > MAX_INT_DIGITS:  # Python refuses to convert past 4,300 digits
        raise OptionError(source, f"{_where(event)}: an integer of {len(event.value):,} digits ({value}); "
                                  f"at most {MAX_INT_DIGITS} digits")
    if event.tag not in (None, "!") and tag in _TYPED_SCALAR_TAGS:
        # An explicit tag on text that is not of that type: PyYAML's constructors end in a KeyError
        # (``!!bool maybe``) or an IndexError (``!!int ''``), not a YAMLError. Read it here to say so.
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark)
        try:
            loader.yaml_constructors[tag](loader, node)
        except (ValueError, KeyError, IndexError, OverflowError):
            raise OptionError(source, f"{_where(event)}: {value!r} cannot be read as {_tag_words(tag)}") from None


def _tag_words(tag: str | None) -> str:
    if tag and tag.startswith(_CORE) and tag[len(_CORE):] in _NAMES:
        return _NAMES[tag[len(_CORE):]]
    shown = f"!!{tag[len(_CORE):]}" if tag and tag.startswith(_CORE) else str(tag)
    return f"a value tagged {shown[:60]}"


def _where(event: Any) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "?"
    return line if len(line) <= 200 else line[:197] + "..."


def _one_line(exc: Exception) -> str:
    """A YAML error in one line: the problem and where (PyYAML's own text spans several lines)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem is None:
        return _first_line(str(exc))
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return _first_line(text)


__all__ = ["MAX_DEPTH", "MAX_EXPANDED_CHARS", "MAX_NODES", "MAX_YAML_BYTES", "PLAIN_SCALAR_TAGS", "dump_yaml",
           "load_yaml_file", "load_yaml_text"]

"""One JSON normaliser: a value as the types JSON holds, for every record contdepth writes.

Why one: a config's options, a checkpoint's description and a report's numbers were each made
JSON-ready by a walk of their own (tuples to lists, keys to text, NaN to null or to text), and
the walks drifted (one kept a mapping that was not a dict, one failed on it). `to_json_value`
is the one walk; its options say what the record needs.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Literal, Mapping

#: What `to_json_value` does with NaN and infinities: keep them (``json`` writes ``NaN``, which
#: Python reads back), ``null`` (strict JSON, what every parser reads) or ``text`` (``"NaN"``,
#: ``"Infinity"``, ``"-Infinity"``: strict JSON that keeps which one it was).
NonFinite = Literal["keep", "null", "text"]


def to_json_value(value: Any, where: str = "value", *, strict: bool = True, non_finite: NonFinite = "keep") -> Any:
    """``value`` as JSON types: tuples become lists, mappings dicts with text keys, a one-element tensor its number.

    Args:
        where: the value's place, named by the error (``model.options``; a key adds ``.key``).
        strict: anything else (a set, a date, an object) is a ``TypeError`` naming its place;
            ``False`` leaves it as it is, for a caller that checked the values before or
            serialises them itself.
        non_finite: see `NonFinite`.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if non_finite == "keep" or math.isfinite(value):
            return value
        if non_finite == "null":
            return None
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    # torch is looked up, not imported: a value cannot be a tensor before torch is loaded, and the
    # bottom layer stays free of it for the command line's start-up (contdepth --help).
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1:
        return to_json_value(value.item(), where, strict=strict, non_finite=non_finite)
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, where, strict=strict, non_finite=non_finite) for v in value]
    if isinstance(value, Mapping):
        return {_json_key(k): to_json_value(v, f"{where}.{k}", strict=strict, non_finite=non_finite)
                for k, v in value.items()}
    if strict:
        raise TypeError(f"{where}: cannot store a {type(value).__name__} in JSON")
    return value


__all__ = ["NonFinite", "to_json_value"]


def _json_key(key: object) -> str:
    """A mapping key as ``json.dumps`` writes it: ``True`` -> ``"true"``, ``None`` -> ``"null"``, others ``str``."""
    if key is True or key is False:
        return "true" if key else "false"
    return "null" if key is None else str(key)

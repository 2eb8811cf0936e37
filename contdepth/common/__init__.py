"""The bottom layer: what every other layer uses, depending on nothing else in contdepth.

- :mod:`.errors`: :class:`OptionError`, a bad option that carries the option's name.
- :mod:`.validate`: one family of validators (integers, numbers, choices, flags).
- :mod:`.files`: atomic file writes and JSON helpers.
"""

from .errors import OptionError
from .files import atomic_write_bytes, atomic_write_text, is_temporary_file, to_json_value
from .validate import check_bool, check_choice, check_int, check_number

__all__ = [
    "OptionError", "atomic_write_bytes", "atomic_write_text", "check_bool", "check_choice", "check_int",
    "check_number", "is_temporary_file", "to_json_value",
]

"""The bottom layer: what every other layer uses, depending on nothing else in contdepth.

- `errors`: `OptionError`, a bad option that carries the option's name.
- `validate`: one family of validators (integers, numbers, choices, flags), and `show` for the
  value a message quotes.
- `json_values`: `to_json_value`, the one walk that makes a value JSON-ready.
- `files`: atomic file writes and regular-file reads (never a wait on a FIFO).
- `registry`: `Registry`, the one shape of every table of names (models, schemes, bases, datasets,
  metrics).
- `options`: `option` and `add_flags`: a config field declared once, its flag generated.
- `progress`: `Progress`, a bar on a terminal and a plain line every so often in a log.
- `yaml_input`: the one YAML reader (aliases, depth and size bounded; JSON-like types only) and its
  writer (`dump_yaml`: what it writes reads back the same).
"""

from .errors import OptionError
from .files import (
    atomic_write_bytes,
    atomic_write_text,
    is_temporary_file,
    open_regular_for_writing,
    read_regular_bytes,
    read_regular_text,
)
from .json_values import to_json_value
from .registry import Registry
from .validate import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_plain_value,
    check_seed,
    check_threads,
    is_int,
    is_number,
    show,
    shorten,
)
from .yaml_input import dump_yaml, load_yaml_file, load_yaml_text

__all__ = [
    "OptionError", "Registry", "atomic_write_bytes", "atomic_write_text", "check_bool", "check_choice", "check_int",
    "check_number", "check_plain_value", "check_seed", "check_threads", "dump_yaml", "is_int", "is_number",
    "is_temporary_file", "load_yaml_file", "load_yaml_text", "open_regular_for_writing", "read_regular_bytes",
    "read_regular_text", "shorten", "show", "to_json_value",
]

"""The one validator family (`contdepth.common.validate`) and the one JSON normaliser (issue 28, item 5).

Each layer used to word its checks its own way; these pin the wordings the layers now share, so a
caller that needs another one extends the family instead of writing its own check.
"""

from __future__ import annotations

import math
import re
import types

import pytest

from contdepth.common import OptionError, check_int, check_number, check_seed, show, shorten, to_json_value
from contdepth.common.validate import FLOAT32_MAX, is_int, is_number


def test_show_quotes_a_value_on_one_bounded_line():
    assert show("abc") == "'abc'"
    long = show("x" * 1000)
    assert len(long) == 60 and long.endswith("...")
    assert shorten("y" * 10, 8) == "yyyyy..." and shorten("short", 8) == "short"
    assert "\n" not in show("a\nb")


def test_predicates_refuse_bools():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(2.5) and not is_number(False) and is_number(math.inf) and not is_number(math.inf, finite=True)


@pytest.mark.parametrize("kwargs, value, message", [
    ({"low": 0, "low_open": True}, 0, "x: must be a finite number > 0, got 0"),
    ({"low": 0, "low_open": True}, math.nan, "x: must be a finite number > 0, got nan"),
    ({"low": 0, "high": 1}, "a", "x: must be a number in [0, 1], got 'a'"),  # between bounds, finite is implied
    ({"low": 0, "high": 1, "allow_none": True}, 2, "x: must be a number in [0, 1] or null, got 2"),
    # the training config's wording: the type and the range apart
    ({"low": 0, "low_open": True, "range_apart": True}, math.nan, "x: must be a finite number, got nan"),
    ({"low": 0, "low_open": True, "range_apart": True}, 0, "x: must be > 0, got 0"),
    ({"low": 0, "high": 1, "high_open": True, "range_apart": True}, 1.0, "x: must lie in [0, 1), got 1.0"),
    ({"low": 0, "float32": True}, 1e300, f"x: must be at most {FLOAT32_MAX:.4g}, the largest float32"),
])
def test_check_number_wording(kwargs, value, message):
    with pytest.raises(OptionError, match="^" + re.escape(message)):
        check_number(value, "x", **kwargs)


def test_check_number_passes_what_may_be_missing_and_returns_floats():
    assert check_number(3, "x", low=0) == 3.0 and isinstance(check_number(3, "x"), float)
    assert check_number(None, "x", low=0, high=1, allow_none=True) is None
    assert math.isnan(check_number(math.nan, "x", low=0, high=1, allow_nan=True))
    with pytest.raises(OptionError):
        check_number(True, "x")


@pytest.mark.parametrize("kwargs, value, message", [
    ({"low": 1}, 0, "n: must be an integer >= 1, got 0"),
    ({"low": 1, "high": 1000}, 5000, "n: must be an integer in 1..1,000, got 5000"),
    ({"low": 1, "high": 1000}, 50_000, "n: must be an integer in 1..1,000, got 50,000"),
    ({"low": 1, "high": 4096, "grouped": False}, 10**9, "n: must be an integer in 1..4096, got 1000000000"),
    ({"low": 1, "high": 4096, "above": "per block"}, 0, "n: must be an integer >= 1, got 0"),
    ({"low": 1, "high": 4096, "above": "per block"}, 10**8, "n: must be at most 4,096 per block, got 100,000,000"),
    ({"low": 1}, "x" * 500, "n: must be an integer >= 1, got 'xxx"),
])
def test_check_int_wording(kwargs, value, message):
    with pytest.raises(OptionError, match="^" + re.escape(message)):
        check_int(value, "n", **kwargs)
    assert len(str(pytest.raises(OptionError, check_int, value, "n", **kwargs).value)) < 120


def test_check_seed_is_what_torch_takes():
    assert check_seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, True, 1.0):
        with pytest.raises(OptionError, match=r"^split_seed: must be an integer in 0\.\.2\*\*63-1"):
            check_seed(bad, "split_seed")


def test_to_json_value_is_the_one_normaliser():
    value = {1: (1, 2.5), "m": types.MappingProxyType({"a": [math.nan, math.inf, -math.inf]})}
    assert to_json_value(value)["1"] == [1, 2.5]
    assert to_json_value(value)["m"]["a"][0] != to_json_value(value)["m"]["a"][0]  # NaN kept
    assert to_json_value(value, non_finite="null")["m"] == {"a": [None, None, None]}
    assert to_json_value(value, non_finite="text")["m"] == {"a": ["NaN", "Infinity", "-Infinity"]}
    with pytest.raises(TypeError, match=r"^config\.data\.x: cannot store a set in JSON"):
        to_json_value({"data": {"x": {1}}}, "config")
    assert to_json_value({"x": {1}}, strict=False) == {"x": {1}}  # left for a caller that checked it

"""The bottom layer's readers of untrusted input: the one YAML reader, regular-file reads and plain values.

Every case is a file anyone could hand contdepth (a spec, a config, a suite folder's
records): the answer is one ``OptionError`` line naming the file or option, at once, never a
hang (each case runs under ``bounded``: a regression fails after seconds instead of filling memory).
"""

from __future__ import annotations

import datetime
import os
import time

import pytest

from contdepth.common import (
    OptionError,
    check_plain_value,
    load_yaml_file,
    load_yaml_text,
    open_regular_for_writing,
    read_regular_text,
)
from contdepth.common.yaml_input import MAX_DEPTH, MAX_EXPANDED_CHARS, MAX_NODES
from helpers import bounded


def laughs(levels: int = 9, width: int = 9) -> str:
    """The billion laughs: ``levels`` anchors, each ``width`` aliases of the one before (width**levels values)."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def refused(text: str, *needles: str, source: str = "spec.yaml") -> str:
    """Load ``text``; assert a one-line OptionError naming ``source`` and every needle, within a second."""
    tic = time.perf_counter()
    with bounded(5), pytest.raises(OptionError) as caught:
        load_yaml_text(text, source)
    message = str(caught.value)
    assert time.perf_counter() - tic < 1.0
    assert "\n" not in message and message.startswith(f"{source}: "), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def test_an_alias_bomb_is_refused_at_once_wherever_it_sits():
    refused(laughs(), "more than 100,000 values with aliases expanded")
    # inside an option value, a list of schemes, a mapping key's value: the same count
    refused("evaluate:\n  schemes: &x [&a [euler, euler, euler], [*a, *a, *a]]\n  n_steps: [" + ", ".join(["*x"] * 5)
            + "]\n" + "bomb: &b0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]\n" for i in range(1, 6)),
            "aliases expanded")
    refused("a: &a [1, *a]\n", "alias *a refers to a node that contains it")  # a cycle: infinite when walked


def test_an_alias_of_a_long_string_counts_its_text_each_time():
    """20,000 aliases of a 20,000-character string: 80 KB of YAML, 400 MB of text once repeated.
    Counted as values it passed (20,001 < 100,000), and the first error message that showed the
    list (``n_basis: ... got ['aaa...', ...]``) took 2 GB and printed 400 MB."""
    text = "n_basis: [&s " + "a" * 20_000 + ", " + ", ".join(["*s"] * 20_000) + "]\n"
    refused(text, f"more than {MAX_EXPANDED_CHARS:,} characters of text with aliases expanded")
    refused("k: &k " + "x" * 600_000 + "\nv: {a: *k}\n", "characters of text")  # an alias in a mapping too
    # a few repeats of a long string and text up to the bound are fine
    assert len(load_yaml_text("a: &s " + "y" * 300_000 + "\nb: [*s, *s]\n", "s")["b"]) == 2


def test_anchors_within_the_bounds_are_yaml_as_usual():
    """Anchors are not refused: a spec may share options between arms (and a suite's stored spec,
    written by yaml.safe_dump, holds anchors wherever two arms share one object)."""
    text = "base: &b {lr: 0.1, model_options: {alpha: 4}}\narms: {a: *b, b: {<<: *b, lr: 0.2}}\n"
    assert load_yaml_text(text, "s") == {"base": {"lr": 0.1, "model_options": {"alpha": 4}},
                                        "arms": {"a": {"lr": 0.1, "model_options": {"alpha": 4}},
                                                 "b": {"lr": 0.2, "model_options": {"alpha": 4}}}}
    assert len(load_yaml_text(laughs(levels=4, width=9), "s")["l3"]) == 9  # 9**4 = 6,561 values: fine
    refused("a: &x 1\nb: &x 2\n", "anchor &x is defined twice")


def test_deep_nesting_is_measured_before_composing_so_never_a_recursion_error():
    refused("- " * 10_000 + "x\n", f"nested more than {MAX_DEPTH} levels deep")  # block style: was RecursionError
    refused("[" * 10_000 + "]" * 10_000, "nest")  # libyaml's scanner stops flow style at 1,000 itself
    refused("a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n", "alias *a nests more")
    assert load_yaml_text("[" * MAX_DEPTH + "]" * MAX_DEPTH, "s") is not None


@pytest.mark.parametrize("text, words", [
    ("start: 2024-01-01\n", "'2024-01-01' is a date or time"),
    ("when: 2024-01-01 10:00:00\n", "is a date or time"),
    ("{2024-01-01: 1}\n", "'2024-01-01' is a date or time"),  # a timestamp as a key
    ("a: !!set {x, y}\n", "a set is not a value any option takes"),
    ("a: !!binary aGVsbG8=\n", "is binary data"),
    ("a: !!omap [x: 1]\n", "an ordered mapping"),
    ("a: !!python/object/apply:os.system [echo hi]\n", "!!python/object/apply:os.system"),
    ("a: !!python/name:os.system ''\n", "!!python/name:os.system"),
    ("a: !mine 1\n", "a value tagged !mine"),
])
def test_values_outside_the_json_types_are_refused_with_their_line(text, words):
    message = refused(text, words, "line 1")
    assert "quote it" in message or "plain lists and mappings" in message


@pytest.mark.parametrize("text, shown", [
    ("a: !!bool maybe\n", "'maybe' cannot be read as a value tagged !!bool"),  # was a KeyError traceback
    ("a: !!int ''\n", "'' cannot be read as a value tagged !!int"),  # was an IndexError traceback
    ("a: !!float ''\n", "'' cannot be read as a value tagged !!float"),
    ("a: !!int '+'\n", "'+' cannot be read as a value tagged !!int"),
    ("a: !<tag:yaml.org,2002:bool> x\n", "'x' cannot be read as a value tagged !!bool"),
])
def test_an_explicit_type_tag_on_text_of_another_type_is_one_line(text, shown):
    refused(text, "line 1, column 4", shown)


def test_an_explicit_type_tag_on_text_of_that_type_is_read():
    assert load_yaml_text("a: !!bool yes\nb: !!int '0x1f'\nc: !!float 1\nd: !!float '1e3'\n", "s") == {
        "a": True, "b": 31, "c": 1.0, "d": 1000.0}


def test_plain_values_and_yaml_1_2_floats():
    assert load_yaml_text("a: '2024-01-01'\nb: 1e-3\nc: 1E5\nd: -2e+3\ne: 1.5\nf: 1_000\ng: [~, yes, off]\n", "s") == {
        "a": "2024-01-01", "b": 0.001, "c": 100000.0, "d": -2000.0, "e": 1.5, "f": 1000, "g": [None, True, False]}
    assert load_yaml_text("", "s") is None
    refused("a: " + "9" * 5000 + "\n", "an integer of 5,000 digits")  # was a ValueError traceback
    refused("a: [1,\n", "not valid YAML", "line 2")
    refused("a: 1\n---\nb: 2\n", "expected a single document")
    refused("x" * (2 << 20), "more than the 1,048,576")


def test_what_contdepth_writes_as_yaml_reads_back_the_same():
    """``yaml.safe_dump`` writes YAML 1.1 and left the text ``1e5`` unquoted; the reader (YAML 1.2 floats)
    then read a suite named ``1e5`` back as the number 100000.0 and refused its own spec."""
    import yaml

    from contdepth.common import dump_yaml
    from contdepth.train import TrainConfig

    value = {"name": "1e5", "arms": {"1e3": {}}, "description": "-2E+3", "n": 1e5, "s": "1.5", "t": "2024-01-01"}
    assert load_yaml_text(yaml.safe_dump(value), "s") != value  # the writer this replaces
    assert load_yaml_text(dump_yaml(value), "s") == value
    config = TrainConfig(data_dir="1e3", model_options={"alpha": 2})  # a folder named 1e3
    assert load_yaml_text(config.to_yaml(), "config.yaml") == config.to_dict()


def test_files_are_read_only_if_regular_and_bounded(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with bounded(5), pytest.raises(OptionError, match=rf"^{fifo}: is not a regular file, so it cannot be an exp"):
        load_yaml_file(fifo, "an experiment spec")  # was: open() waiting for a writer forever
    with pytest.raises(OptionError, match="is not a regular file"):
        read_regular_text("/dev/zero", "a steps record")  # a device never ends
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 101)
    with pytest.raises(OptionError, match=r"is 101 bytes, more than a record can be \(100 bytes\)"):
        read_regular_text(big, "a record", 100)
    (tmp_path / "latin1.yaml").write_bytes(b"a: 1\nb: \xe9\n")
    with pytest.raises(OptionError, match=r"latin1.yaml: line 2: not UTF-8 text"):
        load_yaml_file(tmp_path / "latin1.yaml")
    (tmp_path / "ok.yaml").write_text("a: [1, 2]\n")
    assert load_yaml_file(tmp_path / "ok.yaml") == {"a": [1, 2]}


def test_a_file_written_in_place_must_be_a_regular_one(tmp_path):
    fifo = tmp_path / "seed-0.log"
    os.mkfifo(fifo)
    with bounded(5), pytest.raises(OptionError, match="seed-0.log: cannot write a log"):
        open_regular_for_writing(fifo, "a log")  # no reader: open(fifo, "w") waited forever
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # with a reader it opens, and fstat refuses it
    try:
        with bounded(5), pytest.raises(OptionError, match="is not a regular file, so it cannot be a log"):
            open_regular_for_writing(fifo, "a log")
    finally:
        os.close(reader)
    (tmp_path / "target").write_text("theirs")
    (tmp_path / "link.log").symlink_to(tmp_path / "target")
    with pytest.raises(OptionError, match="link.log: cannot write a log"):
        open_regular_for_writing(tmp_path / "link.log", "a log")
    assert (tmp_path / "target").read_text() == "theirs"
    (tmp_path / "old.log").write_text("a long earlier log\n")
    with open_regular_for_writing(tmp_path / "old.log", "a log") as f:
        f.write("new\n")
    assert (tmp_path / "old.log").read_text() == "new\n"


def test_plain_values_are_checked_without_recursion_and_with_references_counted():
    check_plain_value({"a": [1, 2.5, "x", None, True, {"b": (1, 2)}], 3: "k"}, "opts")
    for value, words in [({"start": datetime.date(2024, 1, 1)}, "opts.start: a date"),
                         ({"s": {1, 2}}, "opts.s: a set"), ({"b": b"x"}, "opts.b: a bytes"),
                         ({datetime.date(2024, 1, 1): 1}, "opts: a key of type date")]:
        with pytest.raises(OptionError, match=words):
            check_plain_value(value, "opts")
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(OptionError, match="nested more than 64 levels"):
        check_plain_value(deep, "opts")
    shared: list = ["lol"] * 9
    for _ in range(8):
        shared = [shared] * 9
    with bounded(5), pytest.raises(OptionError, match=f"more than {MAX_NODES:,} values"):
        check_plain_value({"x": shared}, "opts")

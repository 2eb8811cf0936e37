"""The examples of docs/development.md ("Adding a scheme, a basis, a model, an option or a metric") run as written.

Why a test of its own (``tests/test_docs.py`` also runs every page): each example must work
alone, in a fresh namespace, as a reader would paste it, and leave no name registered behind
(the registries are put back with ``Registry.kept``), so no other test sees ``my_ralston2``.
"""

from __future__ import annotations

import re
import time

import pytest

from contdepth.basis import BASES
from contdepth.data import DATASETS
from contdepth.models import MODELS
from contdepth.solvers import SCHEMES
from contdepth.train.metrics import METRICS
from helpers import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "development.md"
SECTION = "## Adding a scheme, a basis, a model, an option or a metric"
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def examples() -> list[str]:
    """The python blocks of the section, in order."""
    text = PAGE.read_text(encoding="utf-8")
    assert SECTION in text, f"{PAGE.name}: the section {SECTION!r} is gone"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return FENCE.findall(section)


def test_the_section_has_one_example_per_registry_users_extend():
    found = examples()
    assert len(found) == 5
    assert [bool(re.search(rf"\b{call}\b", block)) for block, call in
            zip(found, ("register_scheme", "register_basis", "register_model", "add_flags", "register_metric"))
            ] == [True] * 5


@pytest.mark.parametrize("index", range(5), ids=["scheme", "basis", "model", "option", "metric"])
def test_an_example_runs_alone_fast_and_leaves_the_registries_as_they_were(index):
    block = examples()[index]
    before = {r.kind: r.names() for r in (SCHEMES, BASES, MODELS, DATASETS, METRICS)}
    with SCHEMES.kept(), BASES.kept(), MODELS.kept(), DATASETS.kept(), METRICS.kept():
        start = time.perf_counter()
        exec(compile(block, f"{PAGE.relative_to(REPO_ROOT)} example {index}", "exec", dont_inherit=True),
             {"__name__": "__docs__"})  # dont_inherit: not this file's `from __future__ import annotations`
        elapsed = time.perf_counter() - start
        during = {r.kind: r.names() for r in (SCHEMES, BASES, MODELS, DATASETS, METRICS)}
    assert during != before or index == 3  # it registered something (an option registers nothing)
    assert {r.kind: r.names() for r in (SCHEMES, BASES, MODELS, DATASETS, METRICS)} == before
    assert elapsed < 1.0, f"example {index} took {elapsed:.2f} s; keep it tiny"

"""`contdepth.common.registry.Registry`: the one shape of the model, scheme, basis and dataset tables (issue 28)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from contdepth.common import OptionError
from contdepth.common.registry import Registry
from helpers import REPO_ROOT


def colours() -> Registry[int]:
    table: Registry[int] = Registry("colour")
    table.register("red", 1)
    table.register("green", 2, tags={"cool"})
    return table


def test_register_get_names_contains_and_tags():
    table = colours()
    assert table.get("green") == 2 and table.names() == ["green", "red"] == list(table) and len(table) == 2
    assert "red" in table and "blue" not in table and 3 not in table
    assert table.tags("green") == {"cool"} and table.tags("red") == frozenset()


@pytest.mark.parametrize("name", ["", "two words", "1st", "_private", "a.b", "x" * 65, None, 3, "ümlaut"])
def test_a_name_that_is_not_plain_is_refused_in_one_line(name):
    with pytest.raises(OptionError, match=r"^name: a colour name must be a letter, then letters, digits") as caught:
        colours().register(name, 3)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_a_taken_name_needs_overwrite():
    table = colours()
    with pytest.raises(OptionError, match=r"^name: a colour called 'red' is already registered; pass overwrite=True"):
        table.register("red", 5)
    assert table.register("red", 5, overwrite=True) == 5 and table.get("red") == 5


def test_an_unknown_name_lists_the_choices_and_suggests_the_closest():
    table = colours()
    with pytest.raises(OptionError) as caught:
        table.get("gren")
    assert str(caught.value) == "colour: unknown colour 'gren'; choose one of: green, red; did you mean 'green'?"
    assert caught.value.option == "colour" and isinstance(caught.value, ValueError)
    assert str(table.unknown("zzz")) == "colour: unknown colour 'zzz'; choose one of: green, red"
    assert "did you mean" not in str(table.unknown(7))


def test_normalised_names_and_the_option_an_error_names():
    table: Registry[str] = Registry("dataset", option="name", normalize=lambda n: n.strip().lower().replace("-", "_"))
    table.register("Fashion-MNIST", "loader")
    assert table.names() == ["fashion_mnist"] and table.get(" fashion-mnist ") == "loader"
    with pytest.raises(OptionError, match=r"^name: unknown dataset 'Fashion-MNST'; .*did you mean 'fashion_mnist'\?$"):
        table.get("Fashion-MNST")


def test_kept_puts_the_entries_back_and_unregister_removes_one():
    table = colours()
    with table.kept():
        table.register("blue", 3)
        table.register("red", 9, overwrite=True)
        assert table.unregister("green") == 2
    assert table.names() == ["green", "red"] and table.get("red") == 1
    with pytest.raises(OptionError, match="unknown colour 'blue'"):
        table.unregister("blue")


TABLE_MODULE = """
from contdepth.common.registry import Registry

TABLE = Registry("part")
TABLE.declare("wheel", "registry_probe_builtins", tags={"round"})
IMPORTS = []
"""
BUILTINS_MODULE = """
from registry_probe_table import IMPORTS, TABLE


def wheel():
    return "wheel"


IMPORTS.append(__name__)
TABLE.register("wheel", wheel, tags={"round"})
"""


@pytest.fixture()
def builtin_module(tmp_path, monkeypatch):
    """A table declaring ``wheel``, which module ``registry_probe_builtins`` registers when imported."""
    (tmp_path / "registry_probe_table.py").write_text(TABLE_MODULE)
    (tmp_path / "registry_probe_builtins.py").write_text(BUILTINS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("registry_probe_table", "registry_probe_builtins"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import registry_probe_table

    yield registry_probe_table.TABLE, registry_probe_table.IMPORTS
    for name in ("registry_probe_table", "registry_probe_builtins"):
        sys.modules.pop(name, None)


def test_a_declared_builtin_is_listed_before_and_imported_on_first_use(builtin_module):
    table, imports = builtin_module
    assert table.names() == ["wheel"] and "wheel" in table and table.tags("wheel") == {"round"} and not imports
    assert table.declared() == {"wheel": "registry_probe_builtins"}
    assert table.get("wheel")() == "wheel" and imports == ["registry_probe_builtins"]
    with pytest.raises(OptionError, match="already registered; pass overwrite=True"):
        table.register("wheel", lambda: "mine")
    with pytest.raises(OptionError, match="'wheel' is a built-in part and stays registered"):
        table.unregister("wheel")


def test_a_builtin_replaced_before_its_module_loads_stays_replaced_and_comes_back_after_kept(builtin_module):
    table, imports = builtin_module
    with table.kept():
        table.register("wheel", lambda: "mine", overwrite=True)
        import registry_probe_builtins  # (its import must not fail on the taken name)

        assert imports and table.get("wheel")() == "mine"
    assert table.get("wheel") is registry_probe_builtins.wheel  # not imported again: its built-in is back


def test_the_registries_import_no_torch():
    names = ("import contdepth.models.registry as m, contdepth.basis as b, contdepth.common.registry\n"
             "print(m.available_models(graph=True), b.available_bases(), m.MODELS.tags('gcn'))")
    code = f"{names}\nimport json, sys\nprint(json.dumps('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                         timeout=120).stdout.strip().splitlines()
    assert json.loads(out[-1]) is False, out

"""The numbers of the core's shape (issue 28), for a source tree or a git revision.

Why: the redesign names targets (block.py <= 300 lines, no ``nn/`` module over 350, <= 10
hand-written flags, one validator family, no reach into torch's private tables, no call from a
strategy back into the block). `tools/structure.py --compare REV` prints them before and after.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
# A validator: check_int, check_number ... or config's private _int/_float/_bool/_choice.
VALIDATOR = re.compile(r"^_?(check_)?(int|float|number|bool|choice|positive_int|count|flag)$")
TORCH_TABLES = {"_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"}


def sources_at(rev: str | None) -> dict[str, str]:
    """``{path: text}`` of every ``contdepth/**/*.py`` in the working tree (``rev`` None) or at git ``rev``."""
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "contdepth").rglob("*.py"))}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "contdepth"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".py")}


def _lines(text: str) -> int:
    return len(text.splitlines())


def _calls(tree: ast.AST, name: str) -> int:
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == name)


def _strategy_callbacks(text: str) -> int:
    """Attribute reads on a parameter named ``block`` inside ``nn/integration.py``: a strategy calling back."""
    tree = ast.parse(text)
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
               and n.value.id == "block")


def metrics(sources: dict[str, str]) -> dict[str, object]:
    """The core's numbers for one tree."""
    trees = {path: ast.parse(text) for path, text in sources.items()}
    nn_modules = {p: _lines(t) for p, t in sources.items() if p.startswith("contdepth/nn/")}
    largest = max(nn_modules.items(), key=lambda kv: kv[1])
    cli = [p for p in sources if p == "contdepth/cli.py" or p.startswith("contdepth/commands/")]
    families = sorted({p for p, tree in trees.items() for n in ast.walk(tree)
                       if isinstance(n, ast.FunctionDef) and VALIDATOR.match(n.name)})
    tables = sorted({p for p, tree in trees.items() for n in ast.walk(tree)
                     if isinstance(n, ast.Attribute) and n.attr in TORCH_TABLES
                     and not (isinstance(n.value, ast.Name) and n.value.id == "self")})
    integration = sources.get("contdepth/nn/integration.py", "")
    return {
        "block.py lines": _lines(sources.get("contdepth/nn/block.py", "")),
        "largest nn/ module": f"{largest[0].removeprefix('contdepth/nn/')} ({largest[1]})",
        "cli.py lines": _lines(sources.get("contdepth/cli.py", "")),
        "hand-written add_argument calls": sum(_calls(trees[p], "add_argument") for p in cli),
        "modules defining validators": f"{len(families)} ({', '.join(Path(p).stem for p in families)})",
        "modules touching torch's private tables": f"{len(tables)} ({', '.join(Path(p).stem for p in tables)})",
        "strategy -> block callbacks (nn/integration.py)": _strategy_callbacks(integration) if integration else 0,
    }


def compare(rev: str, show: Callable[[str], None] = print) -> None:
    """A markdown table of `metrics` at ``rev`` and in the working tree."""
    before, after = metrics(sources_at(rev)), metrics(sources_at(None))
    show(f"| measure | {rev} | working tree |")
    show("|---|---|---|")
    for key in after:
        show(f"| {key} | {before.get(key, '-')} | {after[key]} |")

"""Structure report of the contdepth package: lines per module, import circles, private reach-ins.

Why: the issue "One shape for the core" asks for before/after numbers; this script is how
they are measured, so anyone can rerun it.

    python tools/structure.py [--top N]
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parents[1] / "contdepth"


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="largest modules to list")
    parser.add_argument("--compare", metavar="REV", help="print the core's shape (issue 28) at git REV and now")
    args = parser.parse_args()
    if args.compare:
        from core_shape import compare

        compare(args.compare)
        return 0
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p): p for p in files}
    lines = {m: len(p.read_text().splitlines()) for m, p in modules.items()}
    top_edges: dict[str, set[str]] = defaultdict(set)
    all_edges: dict[str, set[str]] = defaultdict(set)
    local_imports = 0
    type_only_imports = 0
    reach_ins: list[str] = []
    own_private = set()  # private names contdepth itself defines (attributes, methods, fields)
    for path in modules.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and node.attr.startswith("_"):
                own_private.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_"):
                own_private.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                own_private.add(node.target.id)
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "__setattr__" and len(node.args) > 1:
                if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    own_private.add(node.args[1].value)
    own_private = {n for n in own_private if n.startswith("_") and not n.startswith("__")}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        top_level = set(id(n) for n in tree.body)
        # `if TYPE_CHECKING:` imports run only under a type checker: they name a type for an
        # annotation and cannot make an import circle, so they are counted apart, not as edges
        type_only = {id(n) for block in tree.body if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                     for n in ast.walk(block) if isinstance(n, (ast.Import, ast.ImportFrom))}
        type_only_imports += len(type_only)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in type_only:
                continue
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.ImportFrom):
                source = resolve(mod, is_package, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append((sub if sub in modules else source, alias.name))
            else:
                targets = [(alias.name, None) for alias in node.names]
            inner = id(node) not in top_level
            if inner and any(t.startswith("contdepth") for t, _ in targets):
                local_imports += 1
            for target, name in targets:
                if not target.startswith("contdepth") or target not in modules:
                    continue
                (all_edges if inner else top_edges)[mod].add(target)
                all_edges[mod].add(target)
                if name and name.startswith("_") and not name.startswith("__") and target != mod:
                    reach_ins.append(f"{mod} imports {target}.{name}")
        for node in ast.walk(tree):  # attribute reach-ins: obj._private where obj is not self/cls
            if isinstance(node, ast.Attribute) and node.attr in own_private:
                base = node.value
                if isinstance(base, ast.Name) and base.id in {"self", "cls", "torch", "np", "os", "sys", "math"}:
                    continue
                if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                    continue
                reach_ins.append(f"{mod} reads .{node.attr}")

    def circles(edges: dict[str, set[str]], key=package_of) -> list[list[str]]:
        """Strongly connected components of more than one node (Tarjan); nodes are ``key(module)``.

        A package's ``__init__`` re-exporting its modules is not a circle, so edges into a
        package's own ``__init__`` from inside it are left out."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on: set[str] = set()
        found: list[list[str]] = []
        counter = [0]
        pkg_edges: dict[str, set[str]] = defaultdict(set)
        for a, bs in edges.items():
            for b in bs:
                pa, pb = key(a), key(b)
                if pa != pb and pa != "contdepth" and pb != "contdepth":
                    pkg_edges[pa].add(pb)
        sys.setrecursionlimit(10000)

        def visit(v: str) -> None:
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in pkg_edges.get(v, ()):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))

        for v in list(pkg_edges):
            if v not in index:
                visit(v)
        return found

    total = sum(lines.values())
    print(f"modules: {len(modules)}, lines: {total}, largest:")
    for mod, n in sorted(lines.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {n:5d}  {mod}")
    print(f"imports of contdepth inside functions: {local_imports}")
    print(f"type-only imports (if TYPE_CHECKING, not import edges): {type_only_imports}")
    print(f"package import circles (all imports): {circles(all_edges) or 'none'}")
    print(f"package import circles (module-level imports): {circles(top_edges) or 'none'}")
    own = {a: {b for b in bs if not (b == package_of(a) or a.startswith(b + "."))} for a, bs in all_edges.items()}
    print(f"module import circles (all imports): {circles(own, key=lambda m: m) or 'none'}")
    cross = [r for r in reach_ins if " imports " in r]
    print(f"private names imported from another module: {len(cross)}")
    for r in cross:
        print(f"  {r}")
    attr = sorted(set(r for r in reach_ins if " reads " in r))
    print(f"reads of contdepth's own private attributes on another object: {len(attr)}")
    for r in attr:
        print(f"  {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

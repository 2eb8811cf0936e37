"""The documentation runs as written: every Python block of every page, every command line, the site build.

* Python: a page's ``python`` blocks run in order in one namespace (a page is one session),
  in a temporary working folder (pages that export write files there).
* Shell: every ``contdepth ...`` line of a ``bash`` block (and ``-m contdepth ...`` after
  ``torchrun``) parses with the command line's own parser, so no page shows an option that
  does not exist; each ``train`` line's options, values included, also pass the trainer's
  preflight (the model built on the meta device), and each ``experiment`` line's spec in the
  repository reads and its arms pass it too. Training runs on Fashion-MNIST are too long for a
  test; their options are what can go stale.
* The site: ``mkdocs build --strict`` (warnings are errors), when mkdocs is installed, built once;
  it opens from files (every link names a file of the site), no Sphinx role reaches a page, wide
  tables get their stylesheet, and the manifestations figure has room for its labels.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from contdepth.basis import BASES
from contdepth.train.metrics import METRICS
from contdepth.cli import build_parser, train_config_from_args
from contdepth.data import registry as data_registry
from contdepth.models import registry as model_registry
from contdepth.solvers import registry as scheme_registry
from contdepth.experiment import ExperimentSpec
from contdepth.train.trainer import preflight
from helpers import REPO_ROOT

DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text(encoding="utf-8")) if lang == language]


def command_lines(text: str) -> list[list[str]]:
    """The ``contdepth`` argument lists of a shell block (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    commands = [part for line in joined.splitlines() for part in re.split(r"\s(?:&&|\|\||;|\|)\s", line)]
    for line in commands:
        words = shlex.split(line, comments=True)
        for at, word in enumerate(words):
            if word != "contdepth" and not word.endswith("/bin/contdepth"):
                continue
            before = words[:at]  # environment assignments and nohup, or "python -m" / "torchrun ... -m"
            if (before and before[-1] == "-m") or all("=" in w or w == "nohup" for w in before):
                found.append(words[at + 1:])
            break  # "cd contdepth", "pip install contdepth": not a command line of ours
    return found


def test_every_page_is_found_and_has_content():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"index.md", "quickstart.md", "guides/convert-resnet.md", "guides/models.md"} <= names
    assert all(len(p.read_text().strip().splitlines()) >= 3 for p in PAGES)  # a reference page: title and :::


def test_every_fence_is_a_block_the_tests_see():
    """A fence the pattern misses (indented, with a title ...) would skip its block silently."""
    for page in [*PAGES, REPO_ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        fences = [line for line in text.splitlines() if line.lstrip().startswith("```")]
        assert len(fences) == 2 * len(FENCE.findall(text)), f"{page}: a fence is indented or carries attributes"


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.relative_to(DOCS).as_posix())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a page may register a dataset, model or scheme: the registries are put back afterwards, so
    # no other test (in this pytest worker) sees the page's names
    namespace: dict = {"__name__": "__docs__"}
    with data_registry.DATASETS.kept(), model_registry.MODELS.kept(), scheme_registry.SCHEMES.kept(), BASES.kept(), \
            METRICS.kept():
        for i, block in enumerate(blocks(page, "python")):
            # dont_inherit: a block runs as a reader pastes it, without this file's `from __future__` imports
            exec(compile(block, f"{page.relative_to(REPO_ROOT)} python block {i}", "exec", dont_inherit=True),
                 namespace)


SHELL_PAGES = [p for p in [*PAGES, REPO_ROOT / "README.md"] if any(command_lines(b) for b in blocks(p, "bash"))]


@pytest.mark.parametrize("page", SHELL_PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_command_lines_parse(page, capsys):
    parser = build_parser()
    for block in blocks(page, "bash"):
        for words in command_lines(block):
            if words and words[0] in ("--help", "-h", "--version"):
                continue
            words = [w for i, w in enumerate(words) if w != "--import" and (i == 0 or words[i - 1] != "--import")]
            try:
                parser.parse_args(words)
            except SystemExit as exc:
                pytest.fail(f"{page.name}: `contdepth {' '.join(words)}` does not parse: {capsys.readouterr().err}")
                raise exc


def _here(config):
    """``config`` as this machine can preflight it: CPU, GPU-only switches off, no run or data folder."""
    return config.replace(device="cpu", channels_last=False, compile=False, out=None, tensorboard=False, data_dir=None,
                          resume=False, overwrite=False, extend=False)


@pytest.mark.parametrize("page", SHELL_PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_train_and_experiment_lines_pass_preflight(page, monkeypatch):
    """Option *values* too: ``--scheme rk5`` or ``--model-option alpha=-3`` on a page fails here."""
    monkeypatch.chdir(REPO_ROOT)  # a --config or spec path is relative to the repository
    parser = build_parser()
    for block in blocks(page, "bash"):
        for words in command_lines(block):
            if not words or "--import" in words:
                continue
            if words[0] == "train" and "--resume" not in words:
                preflight(_here(train_config_from_args(parser.parse_args(words))))
            elif words[0] == "experiment":
                spec_path = REPO_ROOT / next(w for w in words[1:] if not w.startswith("-"))
                if not spec_path.is_file():
                    pytest.fail(f"{page.name}: `contdepth {' '.join(words)}`: spec {spec_path} is not in the repository")
                spec = ExperimentSpec.from_yaml(spec_path)
                for arm in spec.arms:
                    preflight(_here(spec.config(arm, spec.seeds[0])))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for every check below (``mkdocs build --strict``: a warning is an error)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def html_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_the_site_builds_with_warnings_as_errors(site):
    assert (site / "guides" / "convert-resnet.html").is_file()
    schemes = (site / "schemes.html").read_text()
    assert "rk4" in schemes and "<!-- schemes-table -->" not in schemes  # the hook filled the table
    reports = (site / "experiments.html").read_text()
    assert "<!-- experiment-reports -->" not in reports and "architectures" in reports
    assert (site / "figures" / "refinement.png").stat().st_size > 1000


class _Links(HTMLParser):
    """The ``href``/``src`` values of a page and the ``id``s its fragments can point at."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.refs.append(value)
            elif name in ("id", "name") and value:
                self.ids.add(value)


def test_the_site_opens_from_files(site):
    """``open site/index.html`` works: every link of every page names a FILE of the site.

    A directory URL (``quickstart/``) shows a directory listing when the site is opened from
    files, and an absolute one (``/assets/...``) points at the disk's root; a fragment must name
    an anchor of its page (the API reference's cross-references are such links). Only
    ``404.html`` is exempt: a web server shows it for a missing URL at any depth, so its links
    are absolute by design.
    """
    pages = {}
    for page in html_pages(site):
        links = _Links()
        links.feed(page.read_text(encoding="utf-8"))
        pages[page] = links
    broken = []
    for page, links in pages.items():
        if page == site / "404.html":
            continue
        for ref in links.refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc:  # the repository link, data: URLs
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if parts.path.startswith("/") or not target.is_relative_to(site.resolve()) or not target.is_file():
                broken.append(f"{page.relative_to(site)}: {ref}")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{page.relative_to(site)}: {ref} (no such anchor)")
    assert not broken, f"{len(broken)} links do not open from files: " + "; ".join(broken[:20])
    assert sum(len(links.refs) for links in pages.values()) > 1000  # the walk saw the site's links
    # search from files: the index inlined as a script (no fetch) and the worker shim served locally
    assert (site / "search" / "search_index.js").read_text(encoding="utf-8").startswith("var __index = {")
    assert 'src="javascripts/iframe-worker-shim.js"' in (site / "index.html").read_text(encoding="utf-8")


SPHINX_ROLE = re.compile(r":(class|func|meth|attr|mod|data|exc|obj):")


def test_no_sphinx_role_reaches_the_site(site):
    """The reference renders docstrings as Markdown: ``:class:`X``` would show as literal text there.

    A cross-reference is written ``[`X`][contdepth.sub.X]`` (an autoref, which ``--strict``
    checks), or as plain ``X`` in backticks for something the reference does not show.
    """
    leaks = [f"{page.relative_to(site)}: ...{text[max(0, m.start() - 60):m.end() + 40]}..."
             for page in html_pages(site) for text in [page.read_text(encoding="utf-8")]
             for m in SPHINX_ROLE.finditer(text)]
    assert not leaks, f"{len(leaks)} Sphinx roles in the built site, e.g. " + " | ".join(leaks[:5])
    assert 'class="autorefs autorefs-internal"' in (site / "reference" / "nn.html").read_text(encoding="utf-8")


def test_no_sphinx_role_in_a_docstring():
    """The same rule at the source, for every docstring, shown in the reference today or not (no build needed)."""
    found = []
    for path in sorted((REPO_ROOT / "contdepth").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                for offset, line in enumerate(node.value.value.splitlines()):
                    if SPHINX_ROLE.search(line):
                        found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno + offset}: {line.strip()}")
    assert not found, ("Sphinx roles in docstrings (write [`X`][contdepth.sub.X] for a name the API reference "
                       "shows, `X` otherwise):\n" + "\n".join(found))


def test_wide_tables_get_the_table_stylesheet_and_room(site):
    """Tables wrap between words (not inside ``backward_euler``) and the wide-table pages use the window's width."""
    css = (site / "stylesheets" / "tables.css").read_text(encoding="utf-8")
    assert "word-break: normal" in css and "white-space: nowrap" in css and "body:has(.cd-wide-page)" in css
    for page in html_pages(site):
        if page.name != "404.html":
            assert "stylesheets/tables.css" in page.read_text(encoding="utf-8"), page
    for name in ("schemes.html", "results.html", "experiments.html"):
        assert 'class="cd-wide-page"' in (site / name).read_text(encoding="utf-8"), name
    assert 'class="cd-wide-page"' not in (site / "quickstart.html").read_text(encoding="utf-8")


def test_the_manifestations_figure_has_room_for_its_labels(site):
    """Drawn wide enough for the page, and no label sits on another label or on a stage mark."""
    from PIL import Image

    with Image.open(site / "figures" / "manifestations.png") as image:
        assert image.width >= 700 and image.height >= 400, image.size
    spec = importlib.util.spec_from_file_location("docs_figures", REPO_ROOT / "tools" / "docs" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    fig = figures.manifestations_figure()
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        texts = [t for ax in fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title, ax.xaxis.label,
                                                 ax.yaxis.label, *ax.texts)
                 if t.get_visible() and t.get_text()]
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
        boxes += [("legend", ax.get_legend().get_window_extent(renderer)) for ax in fig.axes if ax.get_legend()]
        for i, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1:]:
                assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"
        marks = [xy for ax in fig.axes for c in ax.collections for xy in c.get_offset_transform().transform(c.get_offsets())]
        assert len(marks) >= 20
        for name, box in boxes:
            assert not any(box.contains(x, y) for x, y in marks), f"{name!r} covers a stage mark"
    finally:
        figures.plt.close(fig)

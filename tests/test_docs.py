"""The documentation runs as written: every Python block of every page, every command line, the site build.

* Python: a page's ``python`` blocks run in order in one namespace (a page is one session),
  in a temporary working folder (pages that export write files there).
* Shell: every ``contdepth ...`` line of a ``bash`` block (and ``-m contdepth ...`` after
  ``torchrun``) parses with the command line's own parser, so no page shows an option that
  does not exist; each ``train`` line's options, values included, also pass the trainer's
  preflight (the model built on the meta device), and each ``experiment`` line's spec in the
  repository reads and its arms pass it too. Training runs on Fashion-MNIST are too long for a
  test; their options are what can go stale.
* The site: ``mkdocs build --strict`` (warnings are errors), when mkdocs is installed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

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
    for module, name in [(data_registry, "_DATASETS"), (data_registry, "_GRAPH_DATASETS"), (model_registry, "_MODELS"),
                         (model_registry, "_GRAPH_MODELS"), (scheme_registry, "_SCHEMES")]:
        monkeypatch.setattr(module, name, type(getattr(module, name))(getattr(module, name)))
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks(page, "python")):
        exec(compile(block, f"{page.relative_to(REPO_ROOT)} python block {i}", "exec"), namespace)


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


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "guides" / "convert-resnet" / "index.html").is_file()
    schemes = (tmp_path / "site" / "schemes" / "index.html").read_text()
    assert "rk4" in schemes and "<!-- schemes-table -->" not in schemes  # the hook filled the table
    reports = (tmp_path / "site" / "experiments" / "index.html").read_text()
    assert "<!-- experiment-reports -->" not in reports and "architectures" in reports
    assert (tmp_path / "site" / "figures" / "refinement.png").stat().st_size > 1000

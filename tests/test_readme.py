"""The README's quick start runs as written."""

import re
from pathlib import Path


def test_quick_start_runs():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README.md has no python quick start"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md quick start", "exec"), namespace)
    block = namespace["block"]
    assert block.n_basis == 2 and block.n_steps == 2


def test_custom_training_loop_with_refinement_runs():
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guides" / "models.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", guide, flags=re.S) if "refine_with_optimizer(model" in b]
    assert len(blocks) == 1, "docs/guides/models.md should show refine_with_optimizer in a custom training loop"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md custom training loop", "exec"), namespace)
    model, optimizer = namespace["model"], namespace["optimizer"]
    assert model[0].n_basis == 2 and model[0].n_steps == 2
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters()}


def test_every_python_block_runs_and_every_link_into_docs_exists():
    """The README's blocks run in order in one session; its links to the docs point at pages that exist."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    namespace: dict = {}
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme, flags=re.S)):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 10 and all((root / link).is_file() for link in links), links
    assert len(readme.splitlines()) < 150  # what a visitor reads in two minutes; the rest is the site

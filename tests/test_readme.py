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

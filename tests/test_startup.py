"""Start-up: what ``import contdepth`` and ``contdepth --help`` load (issue 26, item 1).

Not timed (``benchmarks/startup.py`` times them): each check runs a fresh interpreter and
reads ``sys.modules``, so a module imported eagerly again fails here whatever the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import contdepth
from contdepth.common.compiling import eager
from helpers import REPO_ROOT

#: What no program pays for until it uses it.
OPTIONAL = ("torch._dynamo", "onnx", "onnxscript", "matplotlib", "tensorboard", "torch.utils.tensorboard",
            "contdepth.analysis", "contdepth.export", "contdepth.experiment")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_contdepth_loads_no_optional_part_and_not_torch():
    loaded = loaded_after("import contdepth")
    assert not loaded & {*OPTIONAL, "torch"}, sorted(loaded & {*OPTIONAL, "torch"})


def test_the_core_loads_no_compiler_and_no_optional_part():
    loaded = loaded_after("import contdepth as cd\ncd.ContinuousBlock, cd.models.create, cd.train.train, cd.data.load")
    assert "torch" in loaded
    assert not loaded & set(OPTIONAL), sorted(loaded & set(OPTIONAL))


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_help_works_without_importing_torch(argv):
    code = (f"import sys\nfrom contdepth.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code")
    loaded = loaded_after(code)
    assert "torch" not in loaded and not loaded & set(OPTIONAL)
    done = subprocess.run([sys.executable, "-m", "contdepth", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: contdepth"), done.stderr


def test_lazy_names_are_the_public_names():
    assert contdepth.compress is contdepth.analysis.compress
    assert contdepth.StaticBlock is contdepth.export.StaticBlock
    assert contdepth.ContinuousBlock is contdepth.nn.ContinuousBlock
    listed = dir(contdepth)
    assert set(contdepth.__all__) <= set(listed) and {"analysis", "export", "nn", "train"} <= set(listed)
    for name in contdepth.__all__:
        assert getattr(contdepth, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        contdepth.nonexistent  # noqa: B018


def test_the_train_function_stays_public_after_its_module_is_imported():
    import contdepth.train.evaluate  # noqa: F401  (binding the submodule must not shadow the function)

    assert callable(contdepth.train.evaluate) and contdepth.train.evaluate.__name__ == "evaluate"


def test_eager_keeps_a_function_out_of_the_graph_as_compiler_disable_does():
    """The same graphs and breaks as ``@torch.compiler.disable``, and the function runs eagerly."""
    import torch._dynamo

    seen = []

    def body(x):
        seen.append(torch.compiler.is_compiling())
        return x * 2

    lazy, direct = eager(body), torch.compiler.disable(body)

    def through(step):
        return lambda x: step(x.sin()).cos()

    x = torch.linspace(0, 1, 5)
    counts = []
    for step in (direct, lazy, lazy):  # the second lazy trace finds the disabled function already made
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(through(step))(x)
        counts.append((explanation.graph_count, explanation.graph_break_count))
    assert counts[1] == counts[2] == counts[0]
    torch._dynamo.reset()
    compiled = torch.compile(through(lazy), backend="eager")
    torch.testing.assert_close(compiled(x), (x.sin() * 2).cos())
    assert not any(seen)  # never traced: always run eagerly

"""Checks every command shares before any work: a device, an output path, a model and its dataset.

Apart from the training config's own rules (`contdepth.train.config_checks`, which re-exports
these) because ``eval``, ``analyze``, ``export``, ``compress`` and ``experiment`` call them too.
Nothing here imports torch when imported (``check_device`` imports it only to look for CUDA).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..common.errors import OptionError
from ..common.validate import show

#: The model name of a run whose model is the user's own module (``train(config, model=MyNet())``):
#: contdepth cannot rebuild it by name, so loading such a run needs an instance (``load_checkpoint(run, model=...)``).
CUSTOM_MODEL = "custom"


def check_device(device: object, name: str = "device", *, available: bool = True) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; with ``available`` also present on this machine.

    One validator for every command, called before anything is loaded, so that a device
    torch cannot use is an option error and not an ``AssertionError`` from deep inside.
    """
    # isascii: str.isdigit() also passes "²" and other digits int() cannot read (a ValueError traceback later)
    ok = isinstance(device, str) and (device in ("cpu", "cuda") or (device.startswith("cuda:")
                                                                   and device[5:].isascii() and device[5:].isdigit()))
    if not ok:
        raise OptionError(name, f"must be cpu, cuda or cuda:N; got {show(device)}")
    if available and device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise OptionError(name, f"{device} requested but CUDA is not available here (torch {torch.__version__}); "
                                    "use cpu")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise OptionError(name, f"{device} requested but this machine has {torch.cuda.device_count()} CUDA "
                                    f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device  # type: ignore[return-value]


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: a file there means nothing below it can be created."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_path(path: str | Path, name: str = "out", *, folder: bool) -> Path:
    """Refuse an output path that cannot be created, before any work.

    ``path`` is a folder to create (``folder=True``) or a file to write; it must not exist as
    the other kind, and its nearest existing ancestor must be a writable folder (a regular
    file there would otherwise surface as ``NotADirectoryError`` after the data loaded).
    """
    path = Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise OptionError(name, f"{path} exists and is not a folder")
        if not folder and path.is_dir():
            raise OptionError(name, f"{path} is a folder; give the path of a file to write")
    ancestor = path if folder and path.is_dir() else nearest_existing(path.absolute().parent)
    if not ancestor.is_dir():
        raise OptionError(name, f"{path} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OptionError(name, f"{path} cannot be created: the folder {ancestor} is not writable")
    return path


def check_model_data(model: str, data: str) -> None:
    """A model and its dataset are of one kind, image, graph or text (from the names alone, before any file is read)."""
    if model == CUSTOM_MODEL:  # the user's module: the dataset decides the task
        return
    from ..data import available_datasets, dataset_kind
    from ..models import available_models, model_kind

    have, need = dataset_kind(data), model_kind(model)
    if have == need:
        return
    words = {"image": "an image model", "graph": "a graph model (node classification)",
             "text": "a text model (next-byte prediction)"}
    datasets = [d for d in available_datasets() if dataset_kind(d) == need]
    models = [m for m in available_models() if model_kind(m) == have]
    raise OptionError("model", f"{model} is {words[need]}; data {data!r} is {'an' if have == 'image' else 'a'} {have} "
                               f"dataset. {need.capitalize()} datasets: {', '.join(datasets) or '(none registered)'}; "
                               f"{have} models: {', '.join(models) or '(none registered)'}")


__all__ = ["CUSTOM_MODEL", "check_device", "check_model_data", "check_output_path", "nearest_existing"]

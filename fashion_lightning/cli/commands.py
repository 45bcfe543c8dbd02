"""The project's own commands beside Lightning's fit/validate/test/predict: one registry.

Each command is a typed function whose docstring is its help and whose arguments are its options.
Entries name the function rather than import it, so `python -m fashion_lightning fit` does not pay
for LitServe, onnx or Optuna (and fails only when the command that needs a missing extra runs).
Adding a command is one line here.
"""

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_lightning.errors import FashionLightningError

# The program as invoked: the console script, or `python -m fashion_lightning`.
INVOKED_AS_SCRIPT = Path(sys.argv[0]).name == "fashion-lightning"
PROG = "fashion-lightning" if INVOKED_AS_SCRIPT else "python -m fashion_lightning"
# Lightning's subcommands in one line each (its own lines are cut from docstrings mid-sentence).
LIGHTNING_HELP = {
    "fit": "Train a recipe (default: the CNN; `fit --help` lists them), then test its best checkpoint.",
    "validate": "Evaluate a checkpoint (--ckpt_path FILE) on the validation split.",
    "test": "Evaluate a checkpoint (--ckpt_path FILE) on the official test set.",
    "predict": "Classify the test set, or your photos (--data.predict_path), with a checkpoint.",
}
DESCRIPTION = "Train, evaluate and use Fashion-MNIST classifiers with PyTorch Lightning."


@dataclass(frozen=True)
class Command:
    """A registered command: where its function lives, its one-line help, and the extra (pip
    install -e '.[EXTRA]') whose packages it imports, if any."""

    target: str  # "module:function"
    help: str
    extra: str | None = None
    # A command whose own parser takes only some options and hands the rest on (tune's fits).
    passes_on_unknown: bool = False

    def load(self) -> Callable[..., Any]:
        module_name, function = self.target.split(":")
        try:
            return getattr(importlib.import_module(module_name), function)
        except ModuleNotFoundError as e:
            if self.extra is None or e.name.split(".")[0] == "fashion_lightning":
                raise
            raise FashionLightningError(
                f"This command needs the `{self.extra}` extra ({e.name} is not installed): "
                f"pip install -e '.[{self.extra}]'."
            ) from None


COMMANDS: dict[str, Command] = {
    "report": Command(
        "fashion_lightning.experiments.report:report",
        "Evaluate a checkpoint on the test set and write its report folder.",
    ),
    "export": Command(
        "fashion_lightning.deploy.export:export",
        "Export a checkpoint's model for use outside Python training code (ONNX or TorchScript).",
    ),
    "serve": Command(
        "fashion_lightning.deploy.serve:serve",
        "Serve a checkpoint's model over HTTP (LitServe): POST /predict, GET /health, and a page "
        "at GET / to try it on a photo.",
    ),
    "tune": Command(
        "fashion_lightning.experiments.tune:tune",
        "Search a recipe's hyperparameters with Optuna; every trial is an ordinary `fit`.",
        extra="tune",
        passes_on_unknown=True,
    ),
    "repeat": Command(
        "fashion_lightning.experiments.repeat:repeat",
        "Fit one recipe at several seeds (a study of seeds); print the mean ± std of its accuracy.",
        extra="tune",
        passes_on_unknown=True,
    ),
    "runs": Command(
        "fashion_lightning.experiments.runs:runs",
        "One table of every run (fits, tune trials, repeat seeds): state, differing settings, "
        "metrics; grouped, filtered, plotted.",
    ),
}

"""Module paths of earlier versions, still importable: checkpoints and configs record class paths.

Each module lived at the package's top (`fashion_lightning.module.ClassifierModule`) before the
package was arranged by concept. A checkpoint or config.yaml written then names those paths, and
LightningCLI and torch's unpickler import them by name; `install` makes each old name import the
module at its new home (the same module object, so classes compare equal). Standard library only:
the NumPy reference imports this package without torch.
"""

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

PACKAGE = "fashion_lightning"
# old module (under the package) -> its home now
MOVED = {
    "idx": "data.idx",
    "photos": "data.photos",
    "photometric": "data.photometric",
    "calibration": "evaluation.calibration",
    "ood": "evaluation.ood",
    "tta": "evaluation.tta",
    "trust": "evaluation.trust",
    "inference": "evaluation.inference",
    "robustness": "evaluation.robustness",
    "plots": "evaluation.plots",
    "verdict": "evaluation.verdict",
    "module": "training.module",
    "trainer": "training.trainer",
    "callbacks": "training.callbacks",
    "checkpoint": "training.checkpoint",
    "resilience": "training.resilience",
    "precision": "training.precision",
    "run_status": "training.run_status",
    "export": "deploy.export",
    "quantize": "deploy.quantize",
    "serve": "deploy.serve",
    "serve_api": "deploy.serve_api",
    "runtimes": "deploy.runtimes",
    "parent_death": "deploy.parent_death",
    "tune": "experiments.tune",
    "study": "experiments.study",
    "repeat": "experiments.repeat",
    "runs": "experiments.runs",
    "report": "experiments.report",
    "lightning_cli": "cli.lightning",
    "commands": "cli.commands",
    "recipes": "cli.recipes",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `fashion_lightning.<old>` as the module at its new home."""

    def find_spec(self, name: str, path: Any = None, target: Any = None):
        package, _, old = name.partition(".")
        if package != PACKAGE or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def exec_module(self, module: ModuleType) -> None:
        """The import system returns what `sys.modules` holds under the old name afterwards."""
        old = module.__name__.removeprefix(f"{PACKAGE}.")
        sys.modules[module.__name__] = importlib.import_module(f"{PACKAGE}.{MOVED[old]}")


def current_class_path(class_path: str) -> str:
    """`fashion_lightning.module.ClassifierModule` -> `fashion_lightning.training.module.
    ClassifierModule`: the class path at its module's home now (others are returned as given)."""
    package, _, rest = class_path.partition(".")
    module, _, name = rest.rpartition(".")
    if package != PACKAGE or module not in MOVED:
        return class_path
    return f"{PACKAGE}.{MOVED[module]}.{name}"


def with_current_class_paths(value: Any) -> Any:
    """`value` (hyperparameters as a checkpoint records them) with every `class_path` and
    LightningCLI's `_class_path` at its home now: Lightning rebuilds a model from a class path
    only once its module is imported under that very name."""
    if isinstance(value, dict):
        return {
            key: current_class_path(item)
            if key in ("class_path", "_class_path") and isinstance(item, str)
            else with_current_class_paths(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [with_current_class_paths(item) for item in value]
    return value


def install() -> None:
    """Add the finder once, after the ordinary ones: a module that exists is always found first."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())


def forward_attributes(module_name: str) -> Callable[[str], Any]:
    """A package's `__getattr__` (PEP 562) that finds names in `module_name`, imported on first
    use: the package `fashion_lightning.data` answers for the module `data.py` it replaced."""

    package = module_name.rpartition(".")[0]

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"{package}.{name}") is not None:  # a submodule: only it
            return importlib.import_module(f"{package}.{name}")
        return getattr(importlib.import_module(module_name), name)

    return __getattr__

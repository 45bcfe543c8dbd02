"""A checkpoint as one value: read once, then asked for its config, network, run folder or model.

Every command after `fit` starts from a checkpoint: the CLI reads it to make its recorded config
the defaults and to check that the network matches, and report, export, serve and the NumPy
reference rebuild the model from it. They all go through `Checkpoint.read`, so a file is read once
per command and a missing or foreign file gets the same clear paragraph everywhere.
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from fashion_lightning.errors import FashionLightningError
from fashion_lightning.internals import model_from_checkpoint
from fashion_lightning.moved import current_class_path, with_current_class_paths
from fashion_lightning.training.module import ClassifierModule
from fashion_lightning.training.run_status import read_status

WRITTEN_BY = "Pass a .ckpt file written by `python -m fashion_lightning fit`."


@dataclass(frozen=True)
class Checkpoint:
    """A Lightning checkpoint read into memory: `path`, and `state`, the dict Lightning saved.
    `option` is the command-line option that named it, for error messages."""

    path: Path
    state: dict[str, Any]
    option: str = "--ckpt_path"

    @classmethod
    def read(cls, path: str | Path, option: str = "--ckpt_path") -> "Checkpoint":
        """Read `path`, or raise a clear error naming `option` when it is missing or not one."""
        path = Path(path)
        if not path.is_file():
            raise FashionLightningError(
                f"{option} {path} does not exist. Checkpoints are written under "
                f"lightning_logs/version_N/checkpoints/ (last.ckpt and the best by val/acc)."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to unpickle means "not a checkpoint"
            raise FashionLightningError(
                f"{option} {path} is not a readable Lightning checkpoint ({type(e).__name__}). "
                f"{WRITTEN_BY}"
            ) from None
        if not isinstance(state, dict) or "state_dict" not in state:
            raise FashionLightningError(
                f"{option} {path} is not a Lightning checkpoint (it has no state_dict). {WRITTEN_BY}"
            )
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):  # older module paths
            if key in state:
                state[key] = with_current_class_paths(state[key])
        return cls(path, state, option)

    @cached_property
    def config(self) -> dict[str, dict] | None:
        """The `model` and `data` settings the CLI recorded (the init arguments LightningCLI
        saves as hyperparameters), or None when the checkpoint records no network config."""
        model = dict(self.state.get("hyper_parameters") or {})
        if not isinstance(model.get("net"), dict):
            return None
        data = dict(self.state.get("datamodule_hyper_parameters") or {})
        for settings in (model, data):
            for bookkeeping in ("_instantiator", "_class_path"):  # LightningCLI's, not arguments
                settings.pop(bookkeeping, None)
        return {"model": model, "data": data}

    @property
    def network(self) -> str | None:
        """The class path of the network it holds, e.g. `fashion_lightning.models.CNN`."""
        net = (self.state.get("hyper_parameters") or {}).get("net")
        return net.get("class_path") if isinstance(net, dict) else None

    @property
    def run_folder(self) -> Path | None:
        """The folder of the run that wrote it (`<run>/checkpoints/x.ckpt`), if it is in one."""
        folder = self.path.resolve().parent
        if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
            return folder.parent
        return None

    def config_hint(self) -> str:
        """Where the config of the run that wrote it is, as `--config PATH` advice."""
        if self.run_folder is not None:
            return f"--config {self.run_folder / 'config.yaml'}"
        return "the same --config (e.g. configs/cnn.yaml) used to train it"

    def check_weights_fit(self, model: ClassifierModule) -> None:
        """Raise a clear error unless it holds weights of `model`'s shapes and names."""
        state, own = self.state.get("state_dict", {}), model.state_dict()
        shared = set(own) & set(state)
        problems = {
            "missing": sorted(set(own) - set(state)),
            "unexpected": sorted(set(state) - set(own)),
            "other shape": sorted(k for k in shared if own[k].shape != state[k].shape),
        }
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in problems.items()
            if keys
        )
        if detail:
            raise FashionLightningError(
                f"{self.option} {self.path} holds the weights of a different network than the "
                f"config builds ({detail}). Pass the config the checkpoint was trained with: "
                f"{self.config_hint()}."
            )

    def model(self) -> ClassifierModule:
        """The model in eval mode on the CPU, rebuilt from the network config it recorded."""
        if self.config is None:
            raise FashionLightningError(
                f"{self.option} {self.path} does not record its network (it was not written by "
                f"`python -m fashion_lightning fit`), so the model cannot be rebuilt from it alone."
            )
        return model_from_checkpoint(ClassifierModule, self.state).eval()


def load_model(ckpt_path: str | Path, option: str = "--ckpt_path") -> ClassifierModule:
    """The model a checkpoint holds, in eval mode: the one way report, export, serve and the
    NumPy reference get a model from a checkpoint. Errors name `option`."""
    return Checkpoint.read(ckpt_path, option).model()


def find_last_checkpoint(
    roots: list[Path], recipe: str | None = None, network: str | None = None
) -> Path | None:
    """The newest `last.ckpt` under any of `roots` of a run of `recipe` and `network` (its
    status.json's recipe, its config.yaml's network; a run that records neither matches): in
    a run's folder (`version_N/checkpoints/last.ckpt`), or in the root's own `checkpoints/`
    (no logger). So one log folder can hold the runs of several recipes."""
    patterns = ("*/checkpoints/last.ckpt", "checkpoints/last.ckpt")
    found = [
        p
        for root in roots
        if root.is_dir()
        for pattern in patterns
        for p in root.glob(pattern)
        if run_is_of(p.parent.parent, recipe, network)
    ]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def run_is_of(run: Path, recipe: str | None, network: str | None) -> bool:
    """Whether the run folder `run` records no other recipe and no other network."""
    recorded = (read_status(run) or {}).get("recipe")
    config = read_yaml(run / "config.yaml")
    net = ((config.get("model") or {}).get("net") or {}) if isinstance(config, dict) else {}
    saved_network = net.get("class_path") if isinstance(net, dict) else None
    return (None in (recipe, recorded) or recipe == recorded) and (
        None in (network, saved_network) or current_class_path(saved_network) == network
    )


def read_yaml(path: Path) -> dict:
    """A YAML file's mapping; {} when it is missing or not one."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}

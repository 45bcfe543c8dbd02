"""Every private API of Lightning, jsonargparse and torch that the project touches, fenced here.

A private name can move or change in any release, silently. So the project touches each one in
this module only, and `tests/test_internals.py` checks that each still exists and still behaves as
relied on: an upgrade that moves one fails there, loudly, instead of changing behaviour somewhere
else. pyproject.toml pins these libraries below their next minor for the same reason. Where a
public hook does the job, the project uses that instead.
"""

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.optim._muon
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.core.saving import _load_state
from torch import nn

# Lightning's protocol for loaders with state_dict/load_state_dict, which it saves in checkpoints.
Stateful = _Stateful


class FencedLightningCLI(LightningCLI):
    """LightningCLI with its two private steps that the project must change turned into hooks:

    - `_add_subcommands` builds the top-level parser: `add_project_subcommands` lists the
      project's own commands there too, so one `--help` shows them all;
    - `_parse_ckpt_path` would parse a checkpoint's hyperparameters over the whole config,
      overriding the command line: the project makes them defaults instead (see cli/lightning.py), so it
      does nothing here.
    """

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        self.add_project_subcommands(parser)

    def add_project_subcommands(self, parser: LightningArgumentParser) -> None:
        """Override to add subcommands with `list_subcommand`."""

    def _parse_ckpt_path(self) -> None:
        """Checkpoint hyperparameters are made defaults in `parse_arguments` instead."""

    def subcommand_parser(self, name: str) -> LightningArgumentParser:
        """The parser of Lightning's subcommand `name` (fit, validate, test, predict)."""
        return self._subcommand_parsers[name]


def keep_whole_numbers_whole(parser: LightningArgumentParser, dests: set[str]) -> None:
    """Parse the arguments `dests` (typed `Union[int, float]`: a count or a fraction) as an int
    when the value is a whole number. typing caches a Union by its set of members, so once any
    module has written `Union[float, int]`, the Trainer's annotation reads back float-first;
    jsonargparse tries a union's members in order, and `--trainer.limit_val_batches 1` (one
    batch) became 1.0 (every batch) in the Trainer, config.yaml and --print_config. A PEP 604
    union (`int | float`) is not cached with them, so it keeps its order."""
    for action in parser._actions:
        if action.dest in dests:
            action._typehint = int | float | None


def list_subcommand(parser: LightningArgumentParser, name: str, help: str) -> None:
    """List `name` with `help` among the top-level parser's subcommands (help only: it is parsed
    by its own parser elsewhere), or rewrite the help line of one already listed."""
    action = parser._subcommands_action
    for choice in action._choices_actions:
        if choice.dest == name:
            choice.help = help
            return
    listed = LightningArgumentParser(prog=f"{parser.prog} {name}", description=help)
    action.add_subcommand(name, listed, help=help)


def saved_loader_states(checkpoint: dict) -> list[dict]:
    """The training loaders' states that Lightning stored in a checkpoint (its fit loop's)."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    return fit_loop.get("state_dict", {}).get("combined_loader", [])


def align_optimizer_steps(checkpoint: dict) -> None:
    """Make the fit loop's two counts of optimizer steps in `checkpoint` agree, in place.

    Lightning counts the global step in one of two places, by who steps the optimizer: its
    automatic optimization or the module's `training_step` (manual optimization). A run resumed
    under the other (a checkpoint written before the module stepped by hand, or a resume that
    adds --trainer.gradient_clip_val) would find its count at 0: step-based checkpoints, logging
    and `max_steps` would start over. Both counts are set to the one that counted."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    automatic = fit_loop.get("epoch_loop.automatic_optimization.optim_progress", {})
    counts = [
        automatic.get("optimizer", {}).get("step"),
        fit_loop.get("epoch_loop.manual_optimization.optim_step_progress"),
    ]
    if None in counts:
        return
    counted = max(counts, key=lambda count: count["total"]["completed"])
    for count in counts:
        for scope in ("total", "current"):
            count[scope] = dict(counted[scope])


def model_from_checkpoint(cls: type[LightningModule], checkpoint: dict) -> LightningModule:
    """Rebuild `cls` from a checkpoint already read into memory, exactly as
    `cls.load_from_checkpoint(path)` would (hyperparameters through LightningCLI's instantiator,
    then the weights, strictly), without reading the file a second time."""
    return _load_state(cls, checkpoint, strict=True)


def cpu_bf16_units() -> dict[str, bool]:
    """Which bfloat16 units the CPU has, as torch's kernels see them."""
    return {
        "AMX": torch.cpu._is_amx_tile_supported(),
        "AVX512-BF16": torch.cpu._is_avx512_bf16_supported(),
    }


# torch's Newton-Schulz orthogonalization, as `torch.optim.Muon.step` looks it up on each call.
TORCH_NEWTON_SCHULZ = torch.optim._muon._zeropower_via_newtonschulz


@contextmanager
def muon_newton_schulz(orthogonalize: Callable[..., torch.Tensor]) -> Iterator[None]:
    """Within the block, `torch.optim.Muon` orthogonalizes its updates with `orthogonalize`
    (torch's signature) instead of its own, which hard-codes bfloat16."""
    torch.optim._muon._zeropower_via_newtonschulz = orthogonalize
    try:
        yield
    finally:
        torch.optim._muon._zeropower_via_newtonschulz = TORCH_NEWTON_SCHULZ


def default_config_path(config: Any) -> str | None:
    """The default config file jsonargparse parsed a command's settings from (its
    `default_config_files`), which it records under a private key of the parsed config."""
    return config.get("__default_config__")


def set_last_lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, lrs: list[float]) -> None:
    """Set the learning rates a scheduler reports (`get_last_lr`) and its optimizer's groups use,
    after its schedule was changed under it (torch keeps them in `_last_lr`)."""
    scheduler._last_lr = list(lrs)
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr


def with_submodule(module: nn.Module, path: list[str], leaf: nn.Module) -> nn.Module:
    """A copy of `module` with the submodule at `path` replaced by `leaf`; only the modules on
    the path are copied (each with its own dict of children, `nn.Module._modules`), all else,
    parameters included, is shared with `module`, which is unchanged."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    first, *rest = path
    clone._modules[first] = with_submodule(module._modules[first], rest, leaf) if rest else leaf
    return clone

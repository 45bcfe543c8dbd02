"""Every private API of Lightning, jsonargparse and torch that the project touches, fenced here.

A private name can move or change in any release, silently. So the project touches each one in
this module only, and `tests/test_internals.py` checks that each still exists and still behaves as
relied on: an upgrade that moves one fails there, loudly, instead of changing behaviour somewhere
else. pyproject.toml pins these libraries below their next minor for the same reason. Where a
public hook does the job, the project uses that instead.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
import torch.optim._muon
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.core.saving import _load_state
from lightning.pytorch.loops import training_epoch_loop
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.trainer import call

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


# Lightning's dispatcher of callback hooks, as the loops call it (`call._call_callback_hooks`).
LIGHTNING_CALLBACK_HOOKS = call._call_callback_hooks


@cache
def _inherited(kind: type, hook_name: str) -> bool:
    """Whether callbacks of class `kind` leave `hook_name` as `Callback`'s empty default."""
    default = getattr(Callback, hook_name, None)
    return default is not None and getattr(kind, hook_name, None) is default


def call_overridden_callback_hooks(
    trainer: Trainer,
    hook_name: str,
    *args: Any,
    monitoring_callbacks: bool | None = None,
    **kwargs: Any,
) -> None:
    """`call._call_callback_hooks` (Lightning 2.6) less the calls of `Callback`'s empty defaults.

    Lightning calls every hook of every callback, each inside a profiler context, whether the
    callback overrides it or not: about 80 calls per training step for the shipped fit's 13
    callbacks, of which 7 do something (~2 us each on the EPYC, ~0.15 ms a step). This copy
    skips the empty ones and is otherwise Lightning's, line for line, less its debug log line;
    the profiler no longer records the skipped calls. Without a profiler (Lightning's
    `PassThroughProfiler`, the default) it also skips the empty profiler context and the label
    built for it each call (a ModelCheckpoint's `state_key` is a dict formatted anew)."""
    pl_module = trainer.lightning_module
    if pl_module:
        prev_fx_name = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
    callbacks = trainer.callbacks
    profiled = not isinstance(trainer.profiler, PassThroughProfiler)
    if monitoring_callbacks is True:
        callbacks = [cb for cb in callbacks if isinstance(cb, EarlyStopping | Checkpoint)]
    elif monitoring_callbacks is False:
        callbacks = [cb for cb in callbacks if not isinstance(cb, EarlyStopping | Checkpoint)]
    for callback in callbacks:
        if _inherited(type(callback), hook_name) and hook_name not in vars(callback):
            continue
        fn = getattr(callback, hook_name)
        if callable(fn) and profiled:
            with trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook_name}"):
                fn(trainer, trainer.lightning_module, *args, **kwargs)
        elif callable(fn):
            fn(trainer, trainer.lightning_module, *args, **kwargs)
    if pl_module:
        pl_module._current_fx_name = prev_fx_name


def skip_inherited_callback_hooks() -> None:
    """Make every Trainer of this process dispatch callback hooks through
    `call_overridden_callback_hooks` (the loops look the function up in `call` at each call)."""
    call._call_callback_hooks = call_overridden_callback_hooks


# Lightning's test of whether a step takes `batch_idx`, which the training loop makes before every
# step (`_TrainingEpochLoop._build_kwargs`), each time with `inspect.getfullargspec`.
LIGHTNING_SIGNATURE_CHECK = training_epoch_loop.is_param_in_hook_signature


@cache
def _signature_answer(function: Callable, param: str, explicit: bool, min_args: int | None) -> bool:
    return LIGHTNING_SIGNATURE_CHECK(function, param, explicit, min_args)


def remembered_signature_check(
    hook_fx: Callable, param: str, explicit: bool = False, min_args: int | None = None
) -> bool:
    """`is_param_in_hook_signature`, answered once per function: Lightning's answer depends on
    the function alone (bound or not, it drops the first argument), and inspecting it again at
    every step costs ~0.03 ms on the EPYC, 2% of a small network's step."""
    function = getattr(hook_fx, "__func__", hook_fx)
    return _signature_answer(function, param, explicit, min_args)


def remember_step_signatures() -> None:
    """Make the training loop of every Trainer of this process use `remembered_signature_check`
    (the loop looks the function up in its module at each step)."""
    training_epoch_loop.is_param_in_hook_signature = remembered_signature_check

"""The private APIs `fashion_lightning/internals.py` fences: each still exists and still behaves as
relied on. A failure here after an upgrade names the internal that moved; fix internals.py (and
the version pin in pyproject.toml), nothing else."""

import hashlib
import inspect
import os

import lightning as L
import pytest
import torch
from conftest import FittedRun
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loops import training_epoch_loop
from lightning.pytorch.trainer import call

from fashion_lightning import internals
from fashion_lightning.data.datamodule import TensorBatches
from fashion_lightning.training import trainer as trainer_policy
from fashion_lightning.training.checkpoint import Checkpoint
from fashion_lightning.training.module import ClassifierModule


def test_lightning_cli_still_has_the_steps_the_fence_overrides() -> None:
    assert list(inspect.signature(LightningCLI._add_subcommands).parameters) == [
        "self",
        "parser",
        "kwargs",
    ]
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI)
    assert "_subcommand_parsers" in inspect.getsource(LightningCLI._add_subcommands)


def test_list_subcommand_adds_and_rewrites_help_lines(capsys) -> None:
    parser = LightningArgumentParser(prog="prog")
    subcommands = parser.add_subcommands()
    subcommands.add_subcommand("fit", LightningArgumentParser(), help="cut mid-")
    internals.list_subcommand(parser, "fit", "Train a recipe.")
    internals.list_subcommand(parser, "extra", "An extra command.")
    help_text = parser.format_help()
    assert "Train a recipe." in help_text and "cut mid-" not in help_text
    assert "An extra command." in help_text


def test_loader_state_layout_and_stateful_protocol(mlp_fit: FittedRun) -> None:
    batches = TensorBatches(torch.zeros(4, 1, 28, 28), torch.zeros(4), 2)
    assert isinstance(batches, internals.Stateful)
    last = Checkpoint.read(mlp_fit.run / "checkpoints" / "last.ckpt")
    (state,) = internals.saved_loader_states(last.state)
    assert state == {"epoch": 2, "position": 5}  # two passes of 80 training images, batch 16


def test_optimizer_step_counts_layout_and_alignment(mlp_fit: FittedRun) -> None:
    """Both of the fit loop's step counts are where `align_optimizer_steps` looks; the module
    stepped by hand, so the manual count holds the 10 steps, and alignment copies it across."""
    state = Checkpoint.read(mlp_fit.run / "checkpoints" / "last.ckpt").state
    fit_loop = state["loops"]["fit_loop"]
    manual = fit_loop["epoch_loop.manual_optimization.optim_step_progress"]
    automatic = fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    assert (manual["total"]["completed"], automatic["total"]["completed"]) == (10, 0)
    internals.align_optimizer_steps(state)
    assert automatic == manual and automatic["total"]["completed"] == 10


def test_model_from_checkpoint_equals_load_from_checkpoint(mlp_fit: FittedRun) -> None:
    path = mlp_fit.run / "checkpoints" / "last.ckpt"
    ours = Checkpoint.read(path).model().state_dict()
    lightnings = ClassifierModule.load_from_checkpoint(path, map_location="cpu").state_dict()
    assert ours.keys() == lightnings.keys()
    assert all(torch.equal(ours[k], lightnings[k]) for k in ours)


def test_cpu_bf16_units_are_reported_as_booleans() -> None:
    units = internals.cpu_bf16_units()
    assert set(units) == {"AMX", "AVX512-BF16"}
    assert all(isinstance(v, bool) for v in units.values())


def test_lightnings_callback_dispatcher_is_the_one_copied() -> None:
    """`internals.call_overridden_callback_hooks` is a copy of this function: when Lightning
    changes it, bring the copy up to date, then the digest here."""
    source = inspect.getsource(internals.LIGHTNING_CALLBACK_HOOKS)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == "c413fb9a6a9ce1a3"
    assert internals.LIGHTNING_CALLBACK_HOOKS.__module__ == call.__name__


class Recorder(Callback):
    """Records the calls of the one hook it overrides, and the hook name the module sees."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        self.calls.append(pl_module._current_fx_name)


class Silent(Callback):
    """Overrides no hook."""


class Checkpointing(ModelCheckpoint, Recorder):
    """A monitoring callback: `monitoring_callbacks=False` leaves it out."""


@pytest.mark.parametrize("monitoring", [None, True, False])
def test_only_overridden_callback_hooks_are_called(monitoring: bool | None) -> None:
    silent, recorder, checkpointing, by_instance = Silent(), Recorder(), Checkpointing(), Callback()
    instance_calls: list[object] = []
    by_instance.on_before_zero_grad = lambda *args: instance_calls.append(args[-1])
    trainer = L.Trainer(
        callbacks=[silent, recorder, checkpointing, by_instance],
        logger=False,
        enable_progress_bar=False,
        profiler="simple",  # records each call it makes
    )
    trainer.strategy.connect(L.LightningModule())  # the module whose hook name is set
    internals.call_overridden_callback_hooks(
        trainer, "on_before_zero_grad", "optimizer", monitoring_callbacks=monitoring
    )
    assert recorder.calls == ([] if monitoring else ["on_before_zero_grad"])
    assert checkpointing.calls == ([] if monitoring is False else ["on_before_zero_grad"])
    assert instance_calls == ([] if monitoring else ["optimizer"])
    assert trainer.lightning_module._current_fx_name is None  # restored
    called = {name.split("]")[1] for name in trainer.profiler.recorded_durations}
    assert "Silent.on_before_zero_grad" not in called  # its empty default: skipped
    assert not internals._inherited(Recorder, "on_before_zero_grad")
    assert internals._inherited(Recorder, "on_train_batch_end")


def test_the_cli_installs_the_skipping_dispatcher_and_remembered_signatures(
    mlp_fit: FittedRun,
) -> None:
    assert call._call_callback_hooks is internals.call_overridden_callback_hooks
    assert training_epoch_loop.is_param_in_hook_signature is internals.remembered_signature_check


def test_the_training_loop_still_asks_the_signature_check_by_its_module_name() -> None:
    """`remember_step_signatures` replaces the name the loop looks up at each step: if the loop
    stops asking through it, the saving is lost without a word."""
    source = inspect.getsource(training_epoch_loop._TrainingEpochLoop._build_kwargs)
    assert "is_param_in_hook_signature(training_step_fx" in source
    check = internals.LIGHTNING_SIGNATURE_CHECK
    assert check.__module__ == "lightning.pytorch.utilities.signature_utils"


class Steps:
    def indexed(self, batch, batch_idx): ...

    def renamed(self, batch, i): ...

    def batch_only(self, batch): ...

    def starred(self, *args): ...


@pytest.mark.parametrize("name", ["indexed", "renamed", "batch_only", "starred"])
@pytest.mark.parametrize(("explicit", "min_args"), [(False, 2), (True, None), (False, None)])
def test_remembered_signature_checks_answer_as_lightnings(name, explicit, min_args) -> None:
    for hook in (getattr(Steps, name), getattr(Steps(), name)):
        expected = internals.LIGHTNING_SIGNATURE_CHECK(hook, "batch_idx", explicit, min_args)
        for _ in range(2):  # asked, then remembered
            answer = internals.remembered_signature_check(hook, "batch_idx", explicit, min_args)
            assert answer == expected
    assert internals.LIGHTNING_SIGNATURE_CHECK(Steps.batch_only, "batch_idx") is False
    assert internals.LIGHTNING_SIGNATURE_CHECK(Steps.indexed, "batch_idx") is True


def test_lightning_still_asks_torch_for_nvml_based_cuda_checks() -> None:
    """`trainer.skip_nvml_probe_without_driver` undoes this where no driver exists."""
    assert trainer_policy.NVML_CHECK in inspect.getsource(L.fabric)
    assert trainer_policy.NVML_CHECK in inspect.getsource(torch.cuda._nvml_based_avail)


@pytest.mark.parametrize("driver", [True, False])
def test_the_nvml_probe_is_dropped_only_without_a_driver(monkeypatch, driver: bool) -> None:
    def load(name: str) -> object:
        if not driver:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    monkeypatch.setenv(trainer_policy.NVML_CHECK, "1")
    monkeypatch.setattr(trainer_policy.ctypes, "CDLL", load)
    trainer_policy.skip_nvml_probe_without_driver()
    assert (os.environ.get(trainer_policy.NVML_CHECK) == "1") is driver
    assert torch.cuda._nvml_based_avail() is driver

"""The private APIs `fashion_lightning/internals.py` fences: each still exists and still behaves as
relied on. A failure here after an upgrade names the internal that moved; fix internals.py (and
the version pin in pyproject.toml), nothing else."""

import inspect

import torch
from conftest import FittedRun
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from fashion_lightning import internals
from fashion_lightning.checkpoint import Checkpoint
from fashion_lightning.data import TensorBatches
from fashion_lightning.module import ClassifierModule


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

"""The private APIs `fashion_lightning/internals.py` fences: each still exists and still behaves as
relied on. A failure here after an upgrade names the internal that moved; fix internals.py (and
the version pin in pyproject.toml), nothing else."""

import copy
import inspect

import torch
from conftest import FittedRun
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loops import training_epoch_loop
from lightning.pytorch.trainer import call

from fashion_lightning import internals
from fashion_lightning.data.datamodule import TensorBatches
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
    """Both of the fit loop's step counts are where `align_optimizer_steps` looks. Lightning's
    automatic optimization counted the 10 steps; a checkpoint of a version that stepped the
    optimizer in `training_step` counted them in the manual count, and alignment copies them."""
    state = Checkpoint.read(mlp_fit.run / "checkpoints" / "last.ckpt").state
    fit_loop = state["loops"]["fit_loop"]
    manual = fit_loop["epoch_loop.manual_optimization.optim_step_progress"]
    automatic = fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    assert (manual["total"]["completed"], automatic["total"]["completed"]) == (0, 10)
    manual.update(copy.deepcopy(automatic))  # as an older version wrote it
    for scope in ("total", "current"):
        automatic[scope] = {key: 0 for key in automatic[scope]}
    internals.align_optimizer_steps(state)
    assert automatic == manual and automatic["total"]["completed"] == 10


def test_no_library_function_is_replaced_for_the_process(mlp_fit: FittedRun) -> None:
    """After a fit through the CLI, Lightning's loops call Lightning's own functions."""
    assert call._call_callback_hooks.__module__ == "lightning.pytorch.trainer.call"
    check = training_epoch_loop.is_param_in_hook_signature
    assert check.__module__ == "lightning.pytorch.utilities.signature_utils"


def test_the_fenced_helpers_find_what_they_touch(tmp_path) -> None:
    """jsonargparse's default-config key, torch's `_last_lr`, nn.Module's `_modules`."""
    default = tmp_path / "recipe.yaml"
    default.write_text("epochs: 3\n")
    parser = LightningArgumentParser(default_config_files=[str(default)])
    parser.add_argument("--epochs", type=int)
    assert str(internals.default_config_path(parser.parse_args([]))) == str(default)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), lambda step: 1.0
    )
    internals.set_last_lrs(scheduler, [0.25])
    assert scheduler.get_last_lr() == [0.25] and scheduler.optimizer.param_groups[0]["lr"] == 0.25
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 3)))
    body = internals.with_submodule(net, ["1", "0"], torch.nn.Identity())
    assert isinstance(body[1][0], torch.nn.Identity) and isinstance(net[1][0], torch.nn.Linear)
    assert body[0].weight is net[0].weight


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


def test_count_or_fraction_options_keep_a_whole_number_whole() -> None:
    """`limit_val_batches 1` is one batch and `1.0` all of them: the parser keeps them apart
    (typing's cache of `Union[float, int]` would make both 1.0)."""
    from lightning.pytorch import Trainer

    parser = LightningArgumentParser()
    parser.add_class_arguments(Trainer, "trainer")
    internals.keep_whole_numbers_whole(parser, {"trainer.limit_val_batches"})
    for given, parsed in (("1", 1), ("5", 5), ("1.0", 1.0), ("0.25", 0.25)):
        config = parser.parse_args([f"--trainer.limit_val_batches={given}"])
        value = config.trainer.limit_val_batches
        assert value == parsed and type(value) is type(parsed)
        assert f"limit_val_batches: {given}\n" in parser.dump(config)

"""The LightningCLI: Lightning's `fit | validate | test | predict` with the project's defaults.

`fit` with no `--config` trains the default recipe shipped in the package, and ends by testing the
best checkpoint on the official test set. The evaluation commands read the network, model and
data settings a checkpoint recorded, so they need only `--ckpt_path`; they print their metrics and
write no TensorBoard run of their own. User mistakes come out as one paragraph on stderr and exit
status 2 (`cli.cli_main` prints them). `tune` builds its trials' fits here too.
"""

import contextlib
import logging
import os
import sys
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.cli import ArgsType, LightningArgumentParser
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from fashion_lightning.atomic import check_writable, writable_problem
from fashion_lightning.cli.commands import COMMANDS, DESCRIPTION, LIGHTNING_HELP, PROG
from fashion_lightning.cli.recipes import (
    DEFAULT_RECIPE,
    config_paths,
    recipe_names,
    with_recipe_paths,
)
from fashion_lightning.cli.refusals import refusals_as_paragraphs
from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.errors import FashionLightningError, exit_with_usage_error, option_names
from fashion_lightning.internals import (
    FencedLightningCLI,
    default_config_path,
    keep_whole_numbers_whole,
    list_subcommand,
)
from fashion_lightning.training.callbacks import PredictionWriter, TensorBoardImages
from fashion_lightning.training.checkpoint import Checkpoint, find_last_checkpoint
from fashion_lightning.training.module import ClassifierModule
from fashion_lightning.training.resilience import AtomicCheckpointIO, LastCheckpoint
from fashion_lightning.training.trainer import (
    auto_precision,
    check_outputs,
    project_callbacks,
    trainer_defaults,
)

# Our batches come from in-memory tensors with no sampler: they carry their samples' indices.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
# `--ckpt_path last` resumes into the run's own folder, which of course holds checkpoints already.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
# The CLI rewrites recipe names in sys.argv into paths and hands it over as `args`: on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
# Lightning 2.6's own use of an API torch 2.14 deprecates, printed on every command: not ours.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# The model summary counts bf16-mixed weights at 32 bits "instead": mixed precision keeps float32
# weights, so that is what they are.
warnings.filterwarnings("ignore", message="Precision bf16-mixed is not supported by the model")

EVALUATION = ("validate", "test", "predict")
# Names that `--ckpt_path` resolves itself rather than reading a file (only `fit` uses them).
SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}
PARTIAL_CONFIG_HINT = (
    "Naming a --config replaces the default recipe, so a file that sets only some options (e.g. "
    "trainer: {max_epochs: 1}) names no network. Stack it on a recipe, later files overriding "
    "earlier ones: --config cnn --config mine.yaml"
)
# Trainer options that take a number of batches (an int) or a fraction (a float).
COUNT_OR_FRACTION = {
    f"trainer.{name}"
    for name in (
        "limit_train_batches",
        "limit_val_batches",
        "limit_test_batches",
        "limit_predict_batches",
        "val_check_interval",
        "overfit_batches",
    )
}


class ArgumentParser(LightningArgumentParser):
    """Reports a bad option or config value in one paragraph instead of the full usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse's own trial parses expect an exception
            super().error(message, ex)
        if "required" in message and "model.net" in message:
            message = f"{message.rstrip('.')}. {PARTIAL_CONFIG_HINT}"
        exit_with_usage_error(self.prog, message, option_names(self))


class FashionCLI(FencedLightningCLI):
    """LightningCLI over `ClassifierModule` and `FashionMNISTDataModule`."""

    checkpoint: Checkpoint | None = None  # what --ckpt_path names, read once
    run_folder: Path | None = None  # the logger-less run that `--ckpt_path last` resumes
    precision_chosen = False  # fit's precision picked for this hardware, not by the user

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        kwargs.setdefault("allow_abbrev", False)  # `--model.lr` must not mean `--model.lr_decay`
        return super().init_parser(**kwargs)

    def instantiate_classes(self) -> None:
        """Build the model, data and Trainer; a setting Lightning refuses is one paragraph."""
        with refusals_as_paragraphs():
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The Trainer, plus the callbacks that its logger and progress-bar settings allow.
        Evaluation runs with no logger and saves no config: it is not a run of its own."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = dict(config.get("trainer") or {})
        if self.subcommand in EVALUATION:
            trainer["logger"] = kwargs["logger"] = False
            trainer["enable_checkpointing"] = kwargs["enable_checkpointing"] = False
            self.save_config_callback = None
            # Evaluation restores a checkpoint's weights; the fit's callbacks (its checkpointing,
            # weight averaging) and their saved states have nothing to do in it.
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
        if self.subcommand == "fit" and trainer.get("logger") in (False, None):
            # Its config.yaml, status and checkpoints in a run folder of its own, as a logger's.
            root = Path(trainer.get("default_root_dir") or ".")
            kwargs["default_root_dir"] = str(self.run_folder or next_version_folder(root))
        recipe = recipe_name(self.config[self.subcommand] if self.subcommand else self.config)
        validates = getattr(self.datamodule, "val_size", 1) > 0
        if self.subcommand == "fit" and not validates:
            announce("--data.val_size 0: no validation; the best checkpoint is the last epoch's.")
            kwargs["limit_val_batches"] = 0  # Lightning's way to validate nothing
        project = project_callbacks(trainer, recipe, validates)
        callbacks = [*(trainer.get("callbacks") or []), *project]
        # Training takes the hardware's fastest precision; evaluation stays float32 unless told,
        # so validate/test/predict give the same numbers as report, export and serve. A CLI
        # built without a subcommand builds a fit (tune's trials, the benchmarks): it trains.
        if trainer.get("precision") is None and self.subcommand in ("fit", None):
            kwargs["precision"] = auto_precision(trainer.get("accelerator") or "auto")
            self.precision_chosen = True
        if not trainer.get("plugins"):  # checkpoints written aside, then renamed into place
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        keep_whole_numbers_whole(parser, COUNT_OR_FRACTION)
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(TensorBoardImages, "figures")

    def add_project_subcommands(self, parser: LightningArgumentParser) -> None:
        """One `--help` lists Lightning's subcommands and the project's own (which run through
        `cli_main`, never through the LightningCLI)."""
        for name, help_line in LIGHTNING_HELP.items():
            list_subcommand(parser, name, help_line)
        for name, command in COMMANDS.items():
            list_subcommand(parser, name, command.help)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        argv = list(sys.argv[1:] if args is None else args)
        check_yaml_files(argv)
        self.use_checkpoint_config(argv)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand == "fit" and self.config.fit.get("ckpt_path") == "last":
            self.resolve_last_checkpoint()
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in SPECIAL_CKPT_PATHS:
            self.checkpoint = self.checkpoint or Checkpoint.read(path)
            self.check_network(self.config[subcommand].model.net, path)

    def use_checkpoint_config(self, argv: list[str]) -> None:
        """An evaluation command needs a checkpoint file: make the model and data settings it
        recorded the subcommand's defaults, under any `--config` and option given, so the
        checkpoint alone is enough to evaluate it."""
        subcommand = argv[0] if argv else None
        if subcommand not in EVALUATION or {"-h", "--help"} & set(argv):
            return
        path = option_value(argv, "--ckpt_path")
        has_config = option_value(argv, "--config", "-c") is not None
        if path in SPECIAL_CKPT_PATHS or (path is None and not has_config):
            given = (
                f"--ckpt_path {path} only means something inside a `fit` run"
                if path
                else ("No --ckpt_path given")
            )
            raise FashionLightningError(
                f"{given}: `{subcommand}` evaluates a trained model, so it needs a checkpoint "
                f"file, e.g. --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt (or a "
                f"--config naming the network, to evaluate untrained weights)."
            )
        if path is None:
            return
        self.checkpoint = Checkpoint.read(path)
        config = self.checkpoint.config
        if config is None and not has_config:
            raise FashionLightningError(
                f"--ckpt_path {path} records no config (it was not written by `python -m "
                f"fashion_lightning fit`), so the network it holds is unknown. Pass the config it "
                f"was trained with: {self.checkpoint.config_hint()}."
            )
        parser = self.subcommand_parser(subcommand)
        for group, settings in (config or {}).items():
            for key, value in settings.items():
                with contextlib.suppress(KeyError):  # a setting this version no longer has
                    parser.set_defaults({f"{group}.{key}": value})

    def resolve_last_checkpoint(self) -> None:
        """`--ckpt_path last`: the newest last.ckpt under the log folder of a run of the same
        recipe and network, resumed into that run's own folder (its TensorBoard curves
        continue); with none, a fresh run. One log folder can hold several recipes' runs."""
        config = self.config.fit
        recipe, network = recipe_name(config), config.model.net.class_path
        logger = config.trainer.get("logger")
        init = logger.get("init_args") if isinstance(logger, dict | Namespace) else None
        roots = [Path(config.trainer.get("default_root_dir") or ".")]
        if init is not None and init.get("save_dir") is not None:
            roots.insert(0, Path(init.save_dir) / (init.get("name") or ""))
        found = find_last_checkpoint(roots, recipe, network)
        of = f"last.ckpt of recipe `{recipe}`" if recipe else f"last.ckpt of a {network}"
        if found is None:
            where = " or ".join(str(r) for r in dict.fromkeys(roots))
            announce(f"--ckpt_path last: no {of} under {where}; starting a fresh run.")
            config.ckpt_path = None
            return
        run = found.parent.parent
        if logger in (False, None) and run.name.startswith("version_"):
            self.run_folder = run  # a run without a logger continues in its own folder too
        if init is not None and "version" in init and run.parent.resolve() == roots[0].resolve():
            version = run.name.removeprefix("version_")
            init.version = int(version) if version.isdigit() else run.name
        announce(f"--ckpt_path last: resuming from {found} (the newest {of}), into {run}.")
        config.ckpt_path = str(found)

    def check_network(self, wanted: Namespace, path: str) -> None:
        """A checkpoint written through this CLI records its network: refuse a config whose
        network differs, rather than silently testing another model than the one asked for."""
        saved = self.checkpoint.network
        if saved is not None and saved != wanted.class_path:
            raise FashionLightningError(
                f"--ckpt_path {path} holds a {saved} but the config builds a "
                f"{wanted.class_path}. Pass the config it was trained with, "
                f"{self.checkpoint.config_hint()}; validate, test and predict need none (the "
                f"checkpoint records its own)."
            )

    def after_instantiate_classes(self) -> None:
        """Fail on bad data, settings or checkpoints now, before the Trainer writes anything."""
        self.datamodule.load(self.subcommand)
        if self.subcommand == "fit":
            check_outputs(self.trainer)
            self.model.check_optimizer(self.trainer.max_epochs, self.trainer.max_steps)
        if self.checkpoint is not None:
            self.checkpoint.check_weights_fit(self.model)
        if self.subcommand == "predict":
            for writer in self.trainer.callbacks:
                if isinstance(writer, PredictionWriter):
                    writer.folder = evaluation_folder(self.checkpoint)

    def after_fit(self) -> None:
        """Test the best checkpoint on the official test set, in float32 unless the user chose
        a precision (as `test --ckpt_path` does, so it reproduces the figure), and say where
        everything is."""
        trainer = self.trainer
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        # A weight-averaging callback would load the checkpoint's raw weights back over the
        # averaged ones it saved as the state_dict: test what validation chose, the average.
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
        trained_in = trainer.strategy.precision_plugin
        if self.precision_chosen:
            trainer.strategy.precision_plugin = Precision()
        results = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        trainer.strategy.precision_plugin = trained_in
        log_dir = trainer.log_dir if trainer.logger else None
        lines = [test_line(results[0] if results else {}), best_line(trainer, best)]
        if log_dir:
            lines.append(logs_line(trainer.logger, log_dir))
        announce("\n" + "\n".join(line for line in lines if line))


announce = rank_zero_only(print)  # DDP's other processes parse the same arguments


def logs_line(logger: Logger, log_dir: str) -> str:
    """Where the run's logs are, and how to look at them, for the logger it ran with."""
    if isinstance(logger, TensorBoardLogger):
        root = os.path.normpath(logger.root_dir)  # every run of this logger's folder
        return f"TensorBoard logs: {log_dir}  (view: tensorboard --logdir {root})"
    if isinstance(logger, CSVLogger):
        return f"CSV logs: {Path(log_dir) / 'metrics.csv'}  (runs and report read it)"
    return f"{type(logger).__name__} logs: {log_dir}"


def next_version_folder(root: Path) -> Path:
    """`root`/version_N for the first N after every version folder there (a logger's or not)."""
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    return root / f"version_{max(taken, default=-1) + 1}"


def recipe_name(config: Namespace) -> str | None:
    """The name of the recipe a run was built from, `mlp` for --config configs/mlp.yaml (the
    last one given), or the default recipe's; None when there is no config file."""
    paths = config.get("config") or []
    path = paths[-1] if paths else default_config_path(config)
    if path is None:
        return None
    return Path(str(path)).name.removesuffix(".yaml").removesuffix(".yml")


def test_line(metrics: dict[str, float]) -> str:
    acc = metrics.get("test/acc")
    line = f"Test accuracy: {acc:.2%}" if acc is not None else "Test accuracy: not measured"
    if "test/ece" in metrics:  # 15-bin expected calibration error, before and after scaling
        before, after = metrics["test/ece_uncalibrated"], metrics["test/ece"]
        line += f"\nTest ECE: {before:.2%} uncalibrated, {after:.2%} calibrated"
    return line


def best_line(trainer: Trainer, best: str) -> str:
    """Where the best checkpoint is, or why there is none."""
    if best:
        return f"Best checkpoint: {best} (last.ckpt beside it)"
    if trainer.checkpoint_callback is None:
        return ""
    if trainer.fast_dev_run:
        return "Best checkpoint: none (--trainer.fast_dev_run writes no checkpoints)."
    return (
        f"Best checkpoint: none, since validation never ran (--trainer.check_val_every_n_epoch="
        f"{trainer.check_val_every_n_epoch}, {trainer.current_epoch} epoch(s) trained): the test "
        f"used the final weights, which last.ckpt holds. Lower check_val_every_n_epoch to choose "
        f"the checkpoint on validation."
    )


def evaluation_folder(checkpoint: Checkpoint | None) -> Path:
    """Where an evaluation command writes its files: the checkpoint's own run folder, or, where
    that is not writable or not a run folder, ./lightning_logs/eval/ (said in one line)."""
    run = checkpoint.run_folder if checkpoint is not None else None
    if run is not None and writable_problem(run) is None:
        return run
    folder = Path("lightning_logs") / "eval"
    why = "is not in a run folder" if run is None else f"is in {run}, which is not writable"
    if checkpoint is not None:
        announce(f"The checkpoint {why}: writing this command's files to {folder}/.")
    check_writable(folder, "the evaluation output folder")
    return folder


def check_yaml_files(args: list[str]) -> None:
    """A --config file that is not valid YAML is named, with the line and column at fault
    (jsonargparse reports the error in `"<unicode string>"`)."""
    for path in config_paths(args):
        try:
            yaml.safe_load(Path(path).read_text())
        except (OSError, UnicodeDecodeError):
            continue  # jsonargparse says what is wrong with a missing file
        except yaml.YAMLError as e:
            detail = " ".join(str(e).replace('"<unicode string>"', "it").split())
            raise FashionLightningError(
                f"--config {path} is not valid YAML: {detail}. Fix the file (a list is "
                f"written [a, b] or one `- item` per line; mind the indentation)."
            ) from None


def option_value(argv: list[str], *names: str) -> str | None:
    """The value given last to option `names` (`--name VALUE` or `--name=VALUE`) in `argv`."""
    value = None
    for i, arg in enumerate(argv):
        name, equals, rest = arg.partition("=")
        if name in names:
            value = rest if equals else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


class NoTips(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: ... litlogger") from its log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


NO_TIPS = NoTips()


def quiet_tips() -> None:
    """Filter Lightning's log handlers (a filter on a logger misses its children's records)."""
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(NO_TIPS)  # once: a filter already there is not added again


def make_cli(args: ArgsType = None, run: bool = True) -> FashionCLI:
    """The project's LightningCLI; with `run=False` it only builds the model, data and Trainer
    (tune and the benchmarks use this to build the shipped configuration)."""
    quiet_tips()
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list):
        argv = args = with_recipe_paths(argv)
    recipes = ", ".join(recipe_names())
    fit: dict[str, Any] = {
        "description": f"{LIGHTNING_HELP['fit']} Shipped recipes, named by --config NAME: "
        f"{recipes} (default: {DEFAULT_RECIPE.stem}); or give your own YAML file."
    }
    if isinstance(argv, list) and option_value(argv, "--config", "-c") is None:
        # jsonargparse's default config file, only when the user names none: under their
        # --config it would leak the default recipe's settings into theirs.
        fit["default_config_files"] = [str(DEFAULT_RECIPE)]
    parser_kwargs: dict[str, Any] = {
        "prog": PROG,
        "description": DESCRIPTION,
        "version": version("fashion_lightning"),
        "fit": fit,
    }
    return FashionCLI(
        ClassifierModule,
        FashionMNISTDataModule,
        trainer_defaults=trainer_defaults(),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_class=ArgumentParser,
        parser_kwargs=parser_kwargs,
        auto_configure_optimizers=False,  # --model.optimizer is the one way; see training/module.py
        args=args,
        run=run,
    )

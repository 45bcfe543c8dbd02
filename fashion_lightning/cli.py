"""The command line: Lightning's `fit | validate | test | predict` through a LightningCLI with the
project's defaults, and the project's own commands (`commands.COMMANDS`) beside them.

`fit` with no `--config` trains the default recipe shipped in the package, and ends by testing the
best checkpoint on the official test set. The other commands read the network, model and data
settings a checkpoint recorded, so they need only `--ckpt_path`. User mistakes come out as one
paragraph on stderr and exit status 2.
"""

import contextlib
import inspect
import sys
import warnings
from itertools import islice
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from fashion_lightning.commands import COMMANDS
from fashion_lightning.data import FashionMNISTDataModule
from fashion_lightning.errors import FashionLightningError, paragraph
from fashion_lightning.module import ClassifierModule, config_hint, load_checkpoint, recorded_config
from fashion_lightning.resilience import AtomicCheckpointIO, LastCheckpoint, find_last_checkpoint
from fashion_lightning.trainer import (
    auto_precision,
    check_outputs,
    project_callbacks,
    trainer_defaults,
)

# Our batches come from in-memory tensors with no sampler: PredictionWriter knows the indices itself.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
# `--ckpt_path last` resumes into the run's own folder, which of course holds checkpoints already.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")

# Names that `--ckpt_path` resolves itself rather than reading a file.
SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}

# The recipe `fit` trains when given no --config; inside the package, so a wheel install has it.
DEFAULT_RECIPE = Path(__file__).resolve().parent / "configs" / "cnn.yaml"

PROG = "python -m fashion_lightning"


class ArgumentParser(LightningArgumentParser):
    """Reports a bad option or config value in one paragraph instead of the full usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse's own trial parses expect an exception
            super().error(message, ex)
        hint = f"Run `{self.prog} --help` to list every option and its type."
        message = " ".join(message.split()).rstrip(".")
        print(paragraph(f"{message}. {hint}"), file=sys.stderr)
        raise SystemExit(2)


class FashionCLI(LightningCLI):
    """LightningCLI over `ClassifierModule` and `FashionMNISTDataModule`."""

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        kwargs.setdefault("allow_abbrev", False)  # `--model.lr` must not mean `--model.lr_decay`
        return super().init_parser(**kwargs)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The Trainer, plus the callbacks that its logger and progress-bar settings allow."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        callbacks = [*(trainer.get("callbacks") or []), *project_callbacks(trainer)]
        # Training takes the hardware's fastest precision; evaluation stays float32 unless told,
        # so validate/test/predict give the same numbers as report, export and serve.
        if trainer.get("precision") is None and self.subcommand == "fit":
            kwargs["precision"] = auto_precision(trainer.get("accelerator") or "auto")
        if not trainer.get("plugins"):  # checkpoints written aside, then renamed into place
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's subcommands, then the project's own: one `--help` lists them all (they
        run through `cli_main`, never through the LightningCLI)."""
        super()._add_subcommands(parser, **kwargs)
        for name, command in COMMANDS.items():
            listed = ArgumentParser(prog=f"{PROG} {name}", description=command.help)
            parser._subcommands_action.add_subcommand(name, listed, help=command.help)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        argv = sys.argv[1:] if args is None else args
        check_yaml_files(argv)
        if isinstance(argv, list):
            self.use_checkpoint_config(argv)
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") == "fit" and self.config.fit.get("ckpt_path") == "last":
            self.resolve_last_checkpoint()
        ckpt_path = self.ckpt_path()
        if ckpt_path:  # before LightningCLI reads the checkpoint's hyperparameters into the config
            self.check_ckpt_network(ckpt_path)

    def use_checkpoint_config(self, argv: list[str]) -> None:
        """Make the model and data settings recorded in `--ckpt_path` the subcommand's defaults,
        under any `--config` and option given: the checkpoint alone is enough to evaluate it."""
        subcommand = argv[0] if argv else None
        path = option_value(argv, "--ckpt_path")
        if subcommand in (None, "fit") or path is None or path in SPECIAL_CKPT_PATHS:
            return  # `fit` trains its recipe; resuming checks the network against it
        self.checkpoint = load_checkpoint(path)  # read once: check_ckpt_network reuses it
        config = recorded_config(self.checkpoint)
        if config is None and option_value(argv, "--config", "-c") is None:
            raise FashionLightningError(
                f"--ckpt_path {path} records no config (it was not written by `python -m "
                f"fashion_lightning fit`), so the network it holds is unknown. Pass the config it "
                f"was trained with: {config_hint(path)}."
            )
        defaults = {f"{group}.{key}": value for group, settings in (config or {}).items()
                    for key, value in settings.items()}  # fmt: skip
        parser = self._subcommand_parsers[subcommand]
        for key, value in defaults.items():
            with contextlib.suppress(KeyError):  # a setting this version no longer has
                parser.set_defaults({key: value})

    def _parse_ckpt_path(self) -> None:
        """Lightning would now parse the checkpoint's hyperparameters over the config, overriding
        the command line; `use_checkpoint_config` already made them defaults instead."""

    def resolve_last_checkpoint(self) -> None:
        """`--ckpt_path last`: the newest last.ckpt of any run under the log folder, resumed into
        that run's own folder (its TensorBoard curves continue); with none, a fresh run."""
        config = self.config.fit
        logger = config.trainer.get("logger")
        init = logger.get("init_args") if isinstance(logger, dict | Namespace) else None
        roots = [Path(config.trainer.get("default_root_dir") or ".")]
        if init is not None and init.get("save_dir") is not None:
            roots.insert(0, Path(init.save_dir) / (init.get("name") or ""))
        found = find_last_checkpoint(roots)
        if found is None:
            where = " or ".join(str(r) for r in dict.fromkeys(roots))
            announce(f"--ckpt_path last: no last.ckpt under {where}; starting a fresh run.")
            config.ckpt_path = None
            return
        run = found.parent.parent
        if init is not None and "version" in init and run.parent.resolve() == roots[0].resolve():
            version = run.name.removeprefix("version_")
            init.version = int(version) if version.isdigit() else run.name
        announce(f"--ckpt_path last: resuming from {found} (the newest last.ckpt), into {run}.")
        config.ckpt_path = str(found)

    def ckpt_path(self) -> str | None:
        """The checkpoint file the subcommand will load, if it names one."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path in SPECIAL_CKPT_PATHS and subcommand != "fit":
            raise FashionLightningError(
                f"--ckpt_path {path} only means something inside a `fit` run; `{subcommand}` needs "
                f"a checkpoint file, e.g. --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt."
            )
        return path if path and path not in SPECIAL_CKPT_PATHS else None

    def check_ckpt_network(self, path: str) -> None:
        """A checkpoint written through this CLI records its network: refuse a config whose
        network differs, rather than silently testing another model than the one asked for."""
        if getattr(self, "checkpoint", None) is None:  # kept for after_instantiate_classes
            self.checkpoint = load_checkpoint(path)
        saved = self.checkpoint.get("hyper_parameters", {}).get("net")
        wanted_net = self.config[self.config.subcommand].model.net
        if isinstance(saved, dict) and saved.get("class_path") != wanted_net.class_path:
            raise FashionLightningError(
                f"--ckpt_path {path} holds a {saved.get('class_path')} but the config builds a "
                f"{wanted_net.class_path}. Pass the config it was trained with, "
                f"{config_hint(path)}; validate, test and predict need none (the checkpoint "
                f"records its own)."
            )

    def after_instantiate_classes(self) -> None:
        """Fail on bad data or a mismatched checkpoint now, before the Trainer writes anything."""
        self.datamodule.load(self.subcommand)
        if self.subcommand == "fit":
            check_outputs(self.trainer)
        ckpt_path = self.ckpt_path()
        if ckpt_path:
            self.model.check_checkpoint(ckpt_path, self.checkpoint)

    def after_fit(self) -> None:
        """Test the best checkpoint on the official test set and say where everything is."""
        trainer = self.trainer
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        # A weight-averaging callback would load the checkpoint's raw weights back over the
        # averaged ones it saved as the state_dict: test what validation chose, the average.
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
        results = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        log_dir = trainer.log_dir if trainer.logger else None
        report_fit(log_dir, best, results[0] if results else {})


announce = rank_zero_only(print)  # DDP's other processes parse the same arguments


def check_yaml_files(args: ArgsType) -> None:
    """A --config file that is not valid YAML is named, with the line and column at fault
    (jsonargparse reports the error in `"<unicode string>"`)."""
    args = list(args) if isinstance(args, list | tuple) else []
    paths = [b for a, b in zip(args, args[1:]) if a == "--config"]
    paths += [a.removeprefix("--config=") for a in args if a.startswith("--config=")]
    for path in paths:
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


@rank_zero_only
def report_fit(log_dir: str | None, best: str, metrics: dict[str, float]) -> None:
    acc = metrics.get("test/acc")
    lines = [f"Test accuracy: {acc:.2%}" if acc is not None else "Test accuracy: not measured"]
    if "test/ece" in metrics:  # 15-bin expected calibration error, before and after scaling
        before, after = metrics["test/ece_uncalibrated"], metrics["test/ece"]
        lines.append(f"Test ECE: {before:.2%} uncalibrated, {after:.2%} calibrated")
    if best:
        lines.append(f"Best checkpoint: {best} (last.ckpt beside it)")
    if log_dir:
        lines.append(f"TensorBoard logs: {log_dir}  (view: tensorboard --logdir lightning_logs)")
    print("\n" + "\n".join(lines))


def option_value(argv: list[str], *names: str) -> str | None:
    """The value given last to option `names` (`--name VALUE` or `--name=VALUE`) in `argv`."""
    value = None
    for i, arg in enumerate(argv):
        name, equals, rest = arg.partition("=")
        if name in names:
            value = rest if equals else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def split_args(args: list[str], own: set[str]) -> tuple[list[str], list[str]]:
    """A command's own options (`own`, `--name value` or `--name=value`) and the rest, which it
    passes on to the fits it runs (tune's trials)."""
    mine: list[str] = []
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        name = arg.removeprefix("--").split("=", 1)[0]
        if arg in ("-h", "--help"):
            mine.append(arg)
        elif arg.startswith("--") and name in own:
            mine.append(arg)
            if "=" not in arg:
                mine.extend(islice(it, 1))  # its value; the parser reports a missing one
        else:
            rest.append(arg)
    return mine, rest


def run_command(name: str, args: list[str]) -> Any:
    """Parse `args` for the project command `name` (its function's typed, documented arguments)
    and call it. A command that runs fits gets every option it does not know as `fit_args`."""
    command = COMMANDS[name]
    function = command.load()
    summary = inspect.getdoc(function).split("\n\nArgs:")[0]  # the options list the arguments
    parser = ArgumentParser(prog=f"{PROG} {name}", description=summary)
    if not command.passes_on_unknown:
        parser.add_function_arguments(function)
        return function(**parser.parse_args(args).as_dict())
    parser.add_function_arguments(function, skip={"fit_args"})
    own = {p for p in inspect.signature(function).parameters if p != "fit_args"}
    mine, fit_args = split_args(args, own)
    return function(**parser.parse_args(mine).as_dict(), fit_args=fit_args)


def make_cli(args: ArgsType = None, run: bool = True) -> FashionCLI:
    """The project's LightningCLI; with `run=False` it only builds the model, data and Trainer
    (tune and the benchmarks use this to build the shipped configuration)."""
    argv = sys.argv[1:] if args is None else args
    parser_kwargs: dict[str, Any] = {"prog": PROG}
    if isinstance(argv, list) and option_value(argv, "--config", "-c") is None:
        # jsonargparse's default config file, only when the user names none: under their
        # --config it would leak the default recipe's settings into theirs.
        parser_kwargs["fit"] = {"default_config_files": [str(DEFAULT_RECIPE)]}
    return FashionCLI(
        ClassifierModule,
        FashionMNISTDataModule,
        trainer_defaults=trainer_defaults(),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_class=ArgumentParser,
        parser_kwargs=parser_kwargs,
        args=args,
        run=run,
    )


def cli_main(args: ArgsType = None) -> Any:
    """Run the CLI on `args` (default: sys.argv); tests call this with a list of strings.
    A command of `COMMANDS` runs its function; fit, validate, test and predict run through the
    LightningCLI."""
    argv = sys.argv[1:] if args is None else args
    try:
        if isinstance(argv, list) and argv and argv[0] in COMMANDS:
            return run_command(argv[0], argv[1:])
        return make_cli(args)
    except FashionLightningError as e:
        print(paragraph(str(e)), file=sys.stderr)
        raise SystemExit(2) from None

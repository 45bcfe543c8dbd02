"""The command line: `python -m fashion_lightning fit|validate|test|predict --config configs/X.yaml`.

A LightningCLI with the project's defaults (TensorBoard under lightning_logs/, best and last
checkpoints, learning-rate monitor, seed 0). `fit` ends by testing the best checkpoint on the
official test set. User mistakes come out as one paragraph on stderr and exit status 2.
"""

import sys
import warnings
from pathlib import Path
from typing import NoReturn

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from fashion_lightning.callbacks import PredictionWriter, TensorBoardImages
from fashion_lightning.data import FashionMNISTDataModule
from fashion_lightning.errors import FashionLightningError, paragraph
from fashion_lightning.module import ClassifierModule, config_hint, load_checkpoint
from fashion_lightning.report import report

# Our batches come from in-memory tensors with no sampler: PredictionWriter knows the indices itself.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")

# Names that `--ckpt_path` resolves itself rather than reading a file.
SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}


def trainer_defaults() -> dict:
    """The Trainer's defaults; built per run, since callbacks keep state (e.g. the best checkpoint)."""
    return {
        "max_epochs": 10,
        "default_root_dir": "lightning_logs",  # where checkpoints go when there is no logger
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": ".", "name": "lightning_logs", "default_hp_metric": False},
        },
        "callbacks": [PredictionWriter(), TensorBoardImages()],
    }


def optional_callbacks(trainer: dict) -> list[Callback]:
    """Callbacks that only make sense with checkpointing, a logger or a progress bar on."""
    callbacks: list[Callback] = []
    if trainer.get("enable_checkpointing") is not False:  # a ModelCheckpoint would raise
        callbacks.append(
            ModelCheckpoint(
                monitor="val/acc",
                mode="max",
                save_last=True,
                filename="epoch={epoch}-val_acc={val/acc:.4f}",
                auto_insert_metric_name=False,
            )
        )
    if trainer.get("logger") not in (False, None):
        callbacks.append(LearningRateMonitor())  # raises without a logger
    if trainer.get("enable_progress_bar") is not False:
        # Redrawing the bar after every step costs ~0.3 ms: a third of Lightning's per-step
        # overhead on the MLP (scripts/bench_overhead.py).
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    return callbacks


class ArgumentParser(LightningArgumentParser):
    """Reports a bad option or config value in one paragraph instead of the full usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse's own trial parses expect an exception
            super().error(message, ex)
        hint = (
            "Run `python -m fashion_lightning SUBCOMMAND --help` to list every option and its type."
        )
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
        callbacks = [*(trainer.get("callbacks") or []), *optional_callbacks(trainer)]
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        ckpt_path = self.ckpt_path()
        if ckpt_path:  # before LightningCLI reads the checkpoint's hyperparameters into the config
            self.check_ckpt_network(ckpt_path)

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
        self.checkpoint = load_checkpoint(path)  # kept for after_instantiate_classes
        saved = self.checkpoint.get("hyper_parameters", {}).get("net")
        wanted_net = self.config[self.config.subcommand].model.net
        if isinstance(saved, dict) and saved.get("class_path") != wanted_net.class_path:
            raise FashionLightningError(
                f"--ckpt_path {path} holds a {saved.get('class_path')} but the config builds a "
                f"{wanted_net.class_path}. Pass the config the checkpoint was trained with: "
                f"{config_hint(path)}."
            )

    def after_instantiate_classes(self) -> None:
        """Fail on bad data or a mismatched checkpoint now, before the Trainer writes anything."""
        self.datamodule.load()
        ckpt_path = self.ckpt_path()
        if ckpt_path:
            self.model.check_checkpoint(ckpt_path, self.checkpoint)

    def after_fit(self) -> None:
        """Test the best checkpoint on the official test set and say where everything is."""
        trainer = self.trainer
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        results = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        log_dir = trainer.log_dir if trainer.logger else None
        report_fit(log_dir, best, results[0] if results else {})


@rank_zero_only
def report_fit(log_dir: str | None, best: str, metrics: dict[str, float]) -> None:
    acc = metrics.get("test/acc")
    lines = [f"Test accuracy: {acc:.2%}" if acc is not None else "Test accuracy: not measured"]
    if best:
        lines.append(f"Best checkpoint: {best} (last.ckpt beside it)")
    if log_dir:
        lines.append(f"TensorBoard logs: {log_dir}  (view: tensorboard --logdir lightning_logs)")
    print("\n" + "\n".join(lines))


def report_main(args: list[str]) -> Path:
    """The `report` subcommand: its options are `report()`'s typed, documented arguments."""
    parser = ArgumentParser(prog="python -m fashion_lightning report", description=report.__doc__)
    parser.add_function_arguments(report)
    return report(**parser.parse_args(args).as_dict())


def tune_main(args: list[str]) -> Path:
    """The `tune` subcommand: `tune()`'s typed arguments; every other option goes to the fits."""
    try:  # Optuna is an extra, imported only to tune
        from fashion_lightning.tune import split_args, tune
    except ModuleNotFoundError as e:
        if e.name not in ("optuna", "optuna_integration"):
            raise
        raise FashionLightningError(
            f"`tune` needs Optuna ({e.name} is not installed): pip install -e '.[tune]'."
        ) from None

    own, fit_args = split_args(args)
    parser = ArgumentParser(prog="python -m fashion_lightning tune", description=tune.__doc__)
    parser.add_function_arguments(tune, skip={"fit_args"})
    return tune(**parser.parse_args(own).as_dict(), fit_args=fit_args)


def make_cli(args: ArgsType = None, run: bool = True) -> FashionCLI:
    """The project's LightningCLI; with `run=False` it only builds the model, data and Trainer
    (the benchmarks use this to time the shipped configuration)."""
    return FashionCLI(
        ClassifierModule,
        FashionMNISTDataModule,
        trainer_defaults=trainer_defaults(),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_class=ArgumentParser,
        parser_kwargs={"prog": "python -m fashion_lightning"},
        args=args,
        run=run,
    )


def cli_main(args: ArgsType = None) -> FashionCLI | Path:
    """Run the CLI on `args` (default: sys.argv); tests call this with a list of strings.
    `report` and `tune` are handled here; fit, validate, test and predict by the LightningCLI."""
    argv = sys.argv[1:] if args is None else args
    try:
        if isinstance(argv, list) and argv[:1] == ["report"]:
            return report_main(argv[1:])
        if isinstance(argv, list) and argv[:1] == ["tune"]:
            return tune_main(argv[1:])
        return make_cli(args)
    except FashionLightningError as e:
        print(paragraph(str(e)), file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """The `fashion-lightning` console script."""
    cli_main()


if __name__ == "__main__":
    main()

"""Lightning's refusals of a user's settings, told as one paragraph instead of a traceback.

The Trainer checks its own options (`--trainer.accelerator gpu` on a machine without one, a
strategy name that does not exist) and jsonargparse imports the classes a config names (a logger
whose package is not installed). Both raise deep inside the libraries; the user made a settings
mistake and deserves the message, the option and the fix, not 40 frames.
"""

import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from fashion_lightning.errors import FashionLightningError


@contextmanager
def refusals_as_paragraphs() -> Iterator[None]:
    """Turn a refused setting raised inside the block into a `FashionLightningError`; any other
    error (a bug) keeps its traceback."""
    try:
        yield
    except (MisconfigurationException, ValueError, ImportError) as e:
        told = missing_package(e) or trainer_refusal(e)
        if told is None:
            raise
        raise FashionLightningError(told) from None


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the errors it was raised from, outermost first."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def missing_package(error: BaseException) -> str | None:
    """A class named by the config needs a package that is not installed."""
    missing = next((e for e in causes(error) if isinstance(e, ImportError)), None)
    if missing is None:
        return None
    text = " ".join(str(e) for e in causes(error))
    named = re.search(r"class_path '([^']+)'", text)
    what = f"`{named.group(1)}`" if named else "A class the config names"
    return (
        f"{what} needs a package that is not installed: {first_line(missing)}. Install it, or "
        f"choose a class whose package is installed (the default logger, "
        f"lightning.pytorch.loggers.TensorBoardLogger, needs only tensorboard)."
    )


def trainer_refusal(error: BaseException) -> str | None:
    """The Trainer refused one of its options while reading them."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames or "/lightning/" not in frames[-1].filename.replace("\\", "/"):
        return None
    if "connector" not in frames[-1].filename:  # the Trainer's options are read by connectors
        return None
    message = first_line(error)
    hint = "Fix the --trainer option it names (`fit --help` lists them)."
    if re.search(r"\b(gpu|cuda)\b", message, re.I):
        gpus = torch.cuda.device_count()
        hint = (
            f"torch sees {gpus} CUDA GPU{'s' if gpus != 1 else ''} on this machine. Drop "
            f"--trainer.accelerator to let the CLI choose (the CPU where there is no GPU), or "
            f"check the GPU's driver with nvidia-smi."
        )
    return f"The Trainer refused its settings: {message.rstrip('.!')}. {hint}"


def first_line(error: BaseException) -> str:
    """The error's message up to its first blank line, on one line."""
    return " ".join(str(error).split("\n\n")[0].split())

"""The one exception type users see.

Library code raises `FashionLightningError` with a complete, one-paragraph message that names the
file or option at fault and the fix; the command-line edge prints that paragraph and exits non-zero
instead of showing a traceback.
"""

import sys
import textwrap
from typing import NoReturn


class FashionLightningError(Exception):
    """A user mistake (bad data, bad config, bad checkpoint), explained in one paragraph."""


def check_dropout(dropout: float) -> None:
    """Refuse a dropout probability outside [0, 1] before torch raises a bare ValueError."""
    if not 0.0 <= dropout <= 1.0:
        raise FashionLightningError(
            f"--model.net.init_args.dropout is {dropout}; it is a probability, 0 (off) to 1."
        )


class NonFiniteLoss(FashionLightningError):
    """A run diverged (NaN or infinite training loss): a bad setting, which a search may skip."""


def paragraph(message: str, prefix: str = "error: ") -> str:
    """`error: <message>` wrapped to 100 columns; paths and options are never split across lines."""
    return textwrap.fill(
        f"{prefix}{message}",
        width=100,
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def exit_with_usage_error(prog: str, message: str) -> NoReturn:
    """A bad option or config value (an argument parser's error): one paragraph on stderr that
    points to `--help`, instead of the full usage text, and exit status 2."""
    prog = prog.replace(" [options]", "")
    hint = f"Run `{prog} --help` to list every option and its type."
    message = " ".join(message.split()).rstrip(".")
    print(paragraph(f"{message}. {hint}"), file=sys.stderr)
    raise SystemExit(2)

"""The one exception type users see.

Library code raises `FashionLightningError` with a complete, one-paragraph message that names the
file or option at fault and the fix; the command-line edge prints that paragraph and exits non-zero
instead of showing a traceback.
"""

import difflib
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn


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


def exit_with_usage_error(prog: str, message: str, options: Sequence[str] = ()) -> NoReturn:
    """A bad option or config value (an argument parser's error): one paragraph on stderr that
    points to `--help`, instead of the full usage text, and exit status 2. With the parser's
    `options`, a misspelled one gets the closest of them as a suggestion."""
    prog = prog.replace(" [options]", "")
    hint = f"Run `{prog} --help` to list every option and its type."
    message = readable(" ".join(message.split()).rstrip("."), options)
    print(paragraph(f"{message}{' ' if message.endswith('?') else '. '}{hint}"), file=sys.stderr)
    raise SystemExit(2)


def option_names(parser: Any) -> list[str]:
    """The options a jsonargparse parser takes, `--trainer.max_epochs` and the like: its keys."""
    try:
        return [f"--{key}" for key in parser.get_defaults().keys()]  # noqa: SIM118 - flattened
    except Exception:  # noqa: BLE001 - only a suggestion is lost
        return []


def readable(message: str, options: Sequence[str]) -> str:
    """A parser's message as a user reads it: a misspelled option with "did you mean" the
    closest real one; a value of the wrong type as what was given and what the option takes,
    instead of jsonargparse's list of Union subtypes and Python classes."""
    unknown = re.match(r"unrecognized arguments: (--[\w.\-]+)", message, re.I)
    if unknown:
        name = unknown.group(1).split("=")[0]
        close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.75)
        return f"{message}. Did you mean {close[0]}?" if close else message
    typed = re.search(r'Parser key "([^"]+)": (Does not validate|Expected a <class)', message)
    if typed:
        kinds = re.findall(r"Subtypes: \[(.*?)\]", message) or [message[typed.start(2) :]]
        names = re.findall(r"<class '(?:[\w.]+\.)?(\w+)'>", kinds[0])[:4]
        given = re.search(r"(?:Given|Got) value: (.*)$", message)
        taken = " or ".join("null" if n == "NoneType" else n for n in names) or "another type"
        value = f" {given.group(1)}" if given else ""
        return f"--{typed.group(1)}{value}: expected {taken}"
    return message

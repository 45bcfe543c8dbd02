"""The one exception type users see.

Library code raises `FashionLightningError` with a complete, one-paragraph message that names the
file or option at fault and the fix; the command-line edge prints that paragraph and exits non-zero
instead of showing a traceback.
"""

import textwrap


class FashionLightningError(Exception):
    """A user mistake (bad data, bad config, bad checkpoint), explained in one paragraph."""


def paragraph(message: str, prefix: str = "error: ") -> str:
    """`error: <message>` wrapped to 100 columns; paths and options are never split across lines."""
    return textwrap.fill(
        f"{prefix}{message}",
        width=100,
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )

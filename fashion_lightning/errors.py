"""The one exception type users see.

Library code raises `FashionLightningError` with a complete, one-paragraph message that names the
file or option at fault and the fix; the command-line edge prints that paragraph and exits non-zero
instead of showing a traceback.
"""


class FashionLightningError(Exception):
    """A user mistake (bad data, bad config, bad checkpoint), explained in one paragraph."""

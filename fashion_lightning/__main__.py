"""`python -m fashion_lightning COMMAND ...` (and the `fashion-lightning` console script)."""

import torch

from fashion_lightning.cli import cli_main


def main() -> None:
    """Run the command line, then close any DDP process group Lightning left open: gloo's threads
    would otherwise abort the interpreter at exit now and then ("terminate called without an
    active exception", status -6)."""
    cli_main()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

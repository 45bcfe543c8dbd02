"""`python -m fashion_lightning COMMAND ...` (and the `fashion-lightning` console script)."""

import sys

from fashion_lightning.cli.main import cli_main


def main() -> None:
    """Run the command line, then close any DDP process group Lightning left open: gloo's threads
    would otherwise abort the interpreter at exit now and then ("terminate called without an
    active exception", status -6). torch is not imported here: `serve --model` runs without it."""
    cli_main()
    torch = sys.modules.get("torch")  # only a command that imported it can have started DDP
    if torch and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

"""Train the NumPy MLP on its own, or evaluate a Lightning MLP checkpoint with it.

Train it on its own:  python -m fashion_lightning.reference --hidden 256 128 --epochs 10
Evaluate a Lightning MLP checkpoint with it:  python -m fashion_lightning.reference
    --evaluate-checkpoint lightning_logs/version_0/checkpoints/last.ckpt

Its own argparse, the one command line beside the Lightning CLI: the reference stays free of torch.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fashion_lightning.errors import FashionLightningError, paragraph
from fashion_lightning.reference.training import evaluate_checkpoint, train, write_json


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_lightning.reference", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--hidden", type=int, nargs="*", default=[256, 128], help="hidden widths")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--lr-decay", choices=["cosine", "none"], default="cosine")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files")
    parser.add_argument("--metrics-json", type=Path, help="write history and test_acc here")
    parser.add_argument("--evaluate-checkpoint", type=Path, help="a Lightning MLP .ckpt to test")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.hidden_given = any(a.startswith("--hidden") for a in given)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or not 0 <= args.dropout < 1:
        parser.error("--epochs and --batch-size must be positive, --lr > 0, 0 <= --dropout < 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        result = evaluate_checkpoint(args) if args.evaluate_checkpoint else train(args)
        if args.metrics_json:
            write_json(result, args.metrics_json)
    except FashionLightningError as error:
        sys.exit(paragraph(str(error)))
    return result


if __name__ == "__main__":
    main()

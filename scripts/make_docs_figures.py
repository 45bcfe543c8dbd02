"""Regenerate the README's pictures (docs/*.png) from a checkpoint of the shipped CNN.

python -m fashion_lightning fit --config configs/cnn.yaml
python scripts/make_docs_figures.py lightning_logs/version_N/checkpoints/last.ckpt
"""

import shutil
import sys
import tempfile
from pathlib import Path

from fashion_lightning.experiments.report import report

FIGURES = ("confusion_matrix.png", "misclassified.png", "curves.png")


def main(ckpt_path: str, docs: Path = Path(__file__).resolve().parents[1] / "docs") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = report(ckpt_path, out=str(Path(tmp) / "report"))
        docs.mkdir(exist_ok=True)
        for name in FIGURES:
            if (folder / name).exists():
                shutil.copyfile(folder / name, docs / name)
                print(f"wrote {docs / name}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

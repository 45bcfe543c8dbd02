"""Benchmark: the NumPy reference MLP vs scikit-learn's MLPClassifier vs a plain PyTorch loop.

Same data (60k training images, normalized float32), same 784-256-128-10 network, Adam at lr 1e-3,
batch 256, same number of epochs; run one after the other in one process, reported as seconds per
epoch, final test accuracy and speed ratios against the NumPy reference.

    python scripts/bench_reference.py [--epochs 5]      (needs scikit-learn: pip install -e .[bench])
"""

import argparse
import time
import warnings

import numpy as np

from fashion_lightning import reference
from fashion_lightning.data import idx

HIDDEN, BATCH, LR = (256, 128), 256, 1e-3


def numpy_reference(data, epochs: int) -> tuple[float, float]:
    (x, y), (x_test, y_test) = data
    net = reference.MLP((784, *HIDDEN, 10), seed=0, dtype=np.float32)
    optimizer, rng = reference.Adam(net.params(), lr=LR), np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(epochs):
        reference.train_epoch(net, optimizer, x, y, BATCH, rng)
    seconds = time.perf_counter() - start
    return seconds / epochs, reference.evaluate(net, x_test, y_test)["acc"]


def sklearn_mlp(data, epochs: int) -> tuple[float, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    (x, y), (x_test, y_test) = data
    clf = MLPClassifier(
        HIDDEN,
        solver="adam",
        alpha=0.0,
        batch_size=BATCH,
        learning_rate_init=LR,
        max_iter=epochs,
        n_iter_no_change=epochs + 1,
        tol=0,
        random_state=0,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # it stops at max_iter on purpose
        clf.fit(x, y)
    seconds = time.perf_counter() - start
    return seconds / clf.n_iter_, float((clf.predict(x_test) == y_test).mean())


def torch_loop(data, epochs: int) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    from fashion_lightning.models import MLP

    (x, y), (x_test, y_test) = (tuple(map(torch.from_numpy, pair)) for pair in data)
    torch.manual_seed(0)
    net = MLP(10, HIDDEN, dropout=0.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    start = time.perf_counter()
    for _ in range(epochs):
        for index in torch.randperm(len(y)).split(BATCH):
            loss = F.cross_entropy(net(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        acc = (net(x_test).argmax(1) == y_test).float().mean().item()
    return seconds / epochs, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    epochs = parser.parse_args().epochs
    folder = idx.find_data_dir(download=False)
    data = (reference.load_inputs(folder, "train"), reference.load_inputs(folder, "test"))
    rows = {}
    for name, run in (
        ("NumPy reference (float32)", numpy_reference),
        ("scikit-learn MLPClassifier", sklearn_mlp),
        ("PyTorch plain loop", torch_loop),
    ):
        rows[name] = run(data, epochs)
        print(f"  {name}: {rows[name][0]:.2f} s/epoch, test acc {rows[name][1]:.2%}", flush=True)
    ours = rows["NumPy reference (float32)"][0]
    print(f"\n{epochs} epochs, 784-256-128-10, Adam lr {LR}, batch {BATCH}, 60k training images")
    print(f"| {'implementation':<28} | s/epoch | test acc | time vs NumPy reference |")
    print(f"|{'-' * 30}|---------|----------|-------------------------|")
    for name, (seconds, acc) in rows.items():
        print(f"| {name:<28} | {seconds:7.2f} | {acc:8.2%} | {seconds / ours:22.2f}x |")


if __name__ == "__main__":
    main()

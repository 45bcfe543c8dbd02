"""Fault tolerance on tiny synthetic data: the stateful batches, exact resume after a stop at any
step, `--ckpt_path last` across runs, the NaN stop, unwritable outputs, atomic checkpoints."""

import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import config, flat

from fashion_lightning.__main__ import cli_main
from fashion_lightning.data import TensorBatches

N, BATCH = 41, 4  # 41 samples: uneven shards under DDP, a short last batch


def labels_of(batches) -> list[int]:
    return [int(v) for _, y in batches for v in y]


def fresh(rank: int, world_size: int) -> TensorBatches:
    images, labels = torch.zeros(N, 1, 28, 28, dtype=torch.uint8), torch.arange(N)
    return TensorBatches(
        images, labels, BATCH, shuffle=True, seed=3, rank=rank, world_size=world_size
    )


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_batches_resume_from_every_position(world_size: int) -> None:
    """Stop after k batches of the second pass (k = 0 .. the whole pass), restore into a new loader,
    and the rest of that pass and the next one come out as they would have without a stop."""
    for rank in range(world_size):
        reference = fresh(rank, world_size)
        passes = [labels_of(reference) for _ in range(3)]
        assert passes[1] != passes[0]
        n_batches = len(reference)
        for k in range(n_batches + 1):  # start, middle, last batch, epoch boundary
            stopped = fresh(rank, world_size)
            labels_of(stopped)  # pass 0
            it = iter(stopped)
            head = [int(v) for _, (_, y) in zip(range(k), it) for v in y]
            state = stopped.state_dict()  # plain ints: {"epoch": passes begun, "position": k}
            assert all(type(v) is int for v in state.values())
            resumed = fresh(rank, world_size)
            resumed.load_state_dict(state)
            assert len(resumed) == n_batches  # a whole pass, whatever the position
            iter(resumed)  # Lightning checks iterability with an unused iter(): no effect
            rest = labels_of(resumed)
            if k < n_batches:
                assert head + rest == passes[1], (rank, k)
                assert labels_of(resumed) == passes[2]
            else:  # saved at the end of the pass: the next iterator starts the next pass
                assert rest == passes[2], (rank, k)


def test_batches_state_before_any_pass_starts_from_the_beginning() -> None:
    resumed = fresh(0, 1)
    resumed.load_state_dict(fresh(0, 1).state_dict())
    assert labels_of(resumed) == labels_of(fresh(0, 1))


class SendSignal(L.Callback):
    """Sends this process `signum` while training batch `step` (global) is being processed."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def send_signal(step: int, signum: int) -> str:
    """The CLI option that adds `SendSignal(step, signum)` to the Trainer's callbacks."""
    init = json.dumps({"step": step, "signum": int(signum)})
    return (
        f'--trainer.callbacks+={{"class_path": "test_resilience.SendSignal", "init_args": {init}}}'
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (last,) = run_dir.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    return torch.load(last, weights_only=True)["state_dict"]


RESUME_CASES = [  # recipe, signal, global step at which it arrives (5 batches an epoch, 3 epochs)
    ("mlp", signal.SIGTERM, 2),  # mid-epoch
    ("mlp", signal.SIGINT, 5),  # the first batch after an epoch boundary
    ("cnn", signal.SIGINT, 4),  # the last batch of the first epoch, before its validation
    ("cnn", signal.SIGTERM, 7),  # crop, flip, dropout and a warm-up + cosine schedule
]


@pytest.mark.parametrize(("recipe", "signum", "step"), RESUME_CASES)
def test_stop_by_signal_then_resume_is_bit_identical(
    recipe, signum, step, tiny_args, run_dir, capsys, monkeypatch
) -> None:
    args = [
        "fit",
        config(recipe),
        *tiny_args,
        "--trainer.max_epochs=3",
        "--trainer.limit_test_batches=0",
    ]
    cli_main(args)
    expected = final_weights(run_dir)
    os.rename(run_dir / "lightning_logs", run_dir / "reference_logs")

    sender = send_signal(step, signum)
    monkeypatch.setattr("sys.argv", ["fashion_lightning", *args])
    with pytest.raises(SystemExit) as stop:
        cli_main([*args, sender])
    assert stop.value.code == {signal.SIGTERM: 143, signal.SIGINT: 130}[signum]
    err = flat(capsys.readouterr().err)
    assert f"last.ckpt was written at step {step + 1}" in err
    assert "--ckpt_path last" in err
    stopped = torch.load(next(run_dir.glob("lightning_logs/version_0/checkpoints/last.ckpt")),
                         weights_only=True)  # fmt: skip
    assert stopped["global_step"] == step + 1

    cli = cli_main([*args, "--ckpt_path", "last"])
    out = flat(capsys.readouterr().out)
    assert "resuming from" in out and "version_0" in out
    assert Path(cli.trainer.log_dir).name == "version_0"  # the same run folder, curves continue
    assert not (run_dir / "lightning_logs" / "version_1").exists()
    resumed = final_weights(run_dir)
    assert resumed.keys() == expected.keys()
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key

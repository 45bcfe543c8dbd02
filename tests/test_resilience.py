"""Fault tolerance on tiny synthetic data: the stateful batches, exact resume after a stop at any
step, `--ckpt_path last` across runs, the NaN stop, unwritable outputs, atomic checkpoints."""

import functools
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import AIRBENCH_OPTIONS, COMMAND, FittedRun, config, flat

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data.datamodule import TensorBatches
from fashion_lightning.training import trainer as trainer_policy
from fashion_lightning.training.resilience import AtomicCheckpointIO, FiniteLoss, resume_args

N, BATCH = 41, 4  # 41 samples: uneven shards under DDP, a short last batch


def labels_of(batches) -> list[int]:
    return [int(v) for _, y, _ in batches for v in y]


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
            head = [int(v) for _, (_, y, _) in zip(range(k), it) for v in y]
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
    """Sends this process `signum` while training batch `step` (global) is being processed, or
    with `in_validation`, while validating after that step."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM), in_validation: bool = False):
        self.step, self.signum, self.in_validation = step, signum, in_validation

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.in_validation:
            os.kill(os.getpid(), self.signum)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step and self.in_validation and not trainer.sanity_checking:
            os.kill(os.getpid(), self.signum)


def send_signal(step: int, signum: int, in_validation: bool = False) -> str:
    """The CLI option that adds a `SendSignal` to the Trainer's callbacks."""
    init = json.dumps({"step": step, "signum": int(signum), "in_validation": in_validation})
    return (
        f'--trainer.callbacks+={{"class_path": "test_resilience.SendSignal", "init_args": {init}}}'
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (last,) = run_dir.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    return torch.load(last, weights_only=True)["state_dict"]


RESUME_CASES = [  # recipe, signal, global step at which it arrives (5 batches an epoch, 2 epochs)
    ("mlp", signal.SIGTERM, 2, []),  # mid-epoch (the MLP: dropout, cosine decay)
    ("mlp", signal.SIGINT, 4, []),  # the last batch of the first epoch, before its validation
    (  # after an epoch boundary; crop, flip, photometric jitter, dropout, warm-up + cosine
        "mlp",
        signal.SIGTERM,
        7,
        [
            "--data.random_crop=2",
            "--data.horizontal_flip=true",
            "--data.photometric=0.5",
            "--model.warmup_fraction=0.2",
        ],
    ),
    ("mlp", signal.SIGTERM, 2, ["--trainer.limit_train_batches=3"]),  # last batch within a limit
    (  # between two Lookahead syncs (slow != fast), with Muon and a norm group in the state
        "mlp",
        signal.SIGTERM,
        3,
        ["--model.lookahead_every=3", "--model.muon_lr=0.02", "--model.norm_lr_scale=4"],
    ),
    # A CNN: BatchNorm statistics, a whitened stem, alternating flips; stopped in epoch 2
    ("cnn_fast", signal.SIGTERM, 6, AIRBENCH_OPTIONS),
]


@pytest.fixture(scope="module")
def uninterrupted() -> dict[tuple[str, ...], dict[str, torch.Tensor]]:
    """Final weights of fits never stopped, by command: cases that share a command fit it once."""
    return {}


@pytest.mark.parametrize(("recipe", "signum", "step", "extra"), RESUME_CASES)
def test_stop_by_signal_then_resume_is_bit_identical(
    recipe, signum, step, extra, tiny_args, run_dir, capsys, monkeypatch, uninterrupted
) -> None:
    args = ["fit", config(recipe), *tiny_args, "--trainer.limit_test_batches=0", *extra]
    if tuple(args) not in uninterrupted:
        cli_main(args)
        uninterrupted[tuple(args)] = final_weights(run_dir)
        os.rename(run_dir / "lightning_logs", run_dir / "reference_logs")
    expected = uninterrupted[tuple(args)]

    sender = send_signal(step, signum)
    monkeypatch.setattr("sys.argv", ["fashion_lightning", *args])
    with pytest.raises(SystemExit) as stop:
        cli_main([*args, sender])
    assert stop.value.code == {signal.SIGTERM: 143, signal.SIGINT: 130}[signum]
    err = flat(capsys.readouterr().err)
    assert f"last.ckpt was written at step {step + 1}" in err
    assert "--ckpt_path last" in err
    stopped = torch.load(
        next(run_dir.glob("lightning_logs/version_0/checkpoints/last.ckpt")), weights_only=True
    )
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


def test_a_signal_during_the_last_validation_stops_before_the_test(tiny_args, run_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["fit", config("mlp"), *tiny_args, send_signal(10, signal.SIGTERM, True)])
    assert stop.value.code == 143
    captured = capsys.readouterr()
    assert "last.ckpt was written at step 10" in flat(captured.err)
    assert "Test accuracy" not in captured.out
    last = run_dir / "lightning_logs/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 10


def diverge(args: list[str], capsys) -> tuple[str, dict]:
    """A fit that diverges (SGD at lr 1e12) writing last.ckpt after every step it finishes: its
    one-paragraph error, and the last.ckpt it left."""
    sgd = ["--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=1e12"]
    every_step = "--last_checkpoint.every_minutes=1e-9"
    with pytest.raises(SystemExit) as stop:
        cli_main(["fit", config("mlp"), *args, *sgd, "--trainer.max_epochs=5", every_step])
    assert stop.value.code == 2
    err = flat(capsys.readouterr().err)
    assert "Usual causes" in err and "Traceback" not in err, err
    (last,) = Path.cwd().glob("lightning_logs/version_0/checkpoints/last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    weights = checkpoint["state_dict"].values()
    assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point())
    return err, checkpoint


def test_a_diverging_run_stops_at_the_first_nan_loss(tiny_args, run_dir, capsys) -> None:
    err, last = diverge(tiny_args, capsys)
    named = re.search(
        r"The training loss is (nan|inf) at step (\d+) \(epoch \d+, learning rate", err
    )
    assert named and "before this step changed the weights" in err, err
    assert last["global_step"] == int(named[2])  # written after the last finite step


def test_a_nan_read_every_few_steps_still_names_the_first_one(
    tiny_args, run_dir, capsys, monkeypatch
):
    """The GPU and DDP way: the flag is kept on the device and read every few steps and before
    every checkpoint; the stop still names the first non-finite step, and the last checkpoint
    is the last finite one."""
    monkeypatch.setattr(trainer_policy, "FiniteLoss", functools.partial(FiniteLoss, check_every=4))
    err, last = diverge(tiny_args, capsys)
    first = re.search(r"The training loss is not finite at step (\d+)", err)
    assert first and "checked every 4 steps" in err, err
    assert last["global_step"] == int(first[1])


def test_no_last_checkpoint_anywhere_starts_fresh(tiny_args, run_dir, capsys) -> None:
    cli = cli_main(["fit", config("mlp"), *tiny_args, "--trainer.max_epochs=1", "--ckpt_path=last"])
    assert "no last.ckpt of recipe `mlp` under" in flat(capsys.readouterr().out)
    assert cli.trainer.global_step == 5 and Path(cli.trainer.log_dir).name == "version_0"
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_ckpt_path_last_picks_the_newest_run(mlp_run: FittedRun, tiny_args, run_dir, capsys):
    shutil.copytree(mlp_run.run, run_dir / "lightning_logs" / "version_1")  # two finished runs
    newest = run_dir / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    old = run_dir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    os.utime(old, (newest.stat().st_mtime + 10,) * 2)  # version_0 touched last: it is the newest
    capsys.readouterr()
    cli = cli_main(["fit", config("mlp"), *tiny_args, "--trainer.max_epochs=3", "--ckpt_path=last"])
    assert "resuming from lightning_logs/version_0/checkpoints/last.ckpt" in flat(
        capsys.readouterr().out
    )
    assert Path(cli.trainer.log_dir).name == "version_0" and cli.trainer.global_step == 15


def test_ckpt_path_last_resumes_the_newest_run_of_the_same_recipe(
    mlp_run: FittedRun, cnn_fit: FittedRun, tiny_args, run_dir, capsys
) -> None:
    """One log folder, runs of two recipes: each recipe's `--ckpt_path last` finds its own."""
    logs = run_dir / "lightning_logs"
    shutil.copytree(cnn_fit.run, logs / "version_1")
    newest = logs / "version_1" / "checkpoints" / "last.ckpt"
    os.utime(newest, (newest.stat().st_mtime + 10,) * 2)  # the CNN's run is the newest
    capsys.readouterr()
    cli = cli_main(["fit", config("mlp"), *tiny_args, "--trainer.max_epochs=3", "--ckpt_path=last"])
    out = flat(capsys.readouterr().out)
    assert "resuming from lightning_logs/version_0/checkpoints/last.ckpt" in out
    assert "the newest last.ckpt of recipe `mlp`" in out
    assert Path(cli.trainer.log_dir).name == "version_0" and cli.trainer.global_step == 15


class RecordLastStep(L.Callback):
    """Records, as each batch starts, the step that last.ckpt holds."""

    steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        step = torch.load(path, weights_only=True)["global_step"] if path.exists() else None
        RecordLastStep.steps.append(step)


def test_last_checkpoint_is_refreshed_on_a_timer(tiny_args, run_dir) -> None:
    RecordLastStep.steps = []
    record = '--trainer.callbacks+={"class_path": "test_resilience.RecordLastStep"}'
    cli_main(["fit", config("mlp"), *tiny_args, record, "--last_checkpoint.every_minutes=1e-9"])
    assert RecordLastStep.steps == [None, *range(1, 10)]  # written after every batch


@pytest.mark.parametrize(
    ("option", "make"),
    [
        ("--trainer.logger.init_args.save_dir", lambda d: (d / "a_file").write_text("x")),
        ("--trainer.default_root_dir", lambda d: (d / "a_file").write_text("x")),
    ],
)
def test_unwritable_output_folders_are_refused_before_training(
    option, make, tiny_args, run_dir, capsys
) -> None:
    make(run_dir)
    args = ["fit", config("mlp"), *tiny_args, f"{option}={run_dir / 'a_file' / 'logs'}"]
    if option == "--trainer.default_root_dir":
        args.append("--trainer.logger=false")
    with pytest.raises(SystemExit) as stop:
        cli_main(args)
    assert stop.value.code == 2
    err = flat(capsys.readouterr().err)
    assert option in err and "is a file, not a folder" in err
    assert not list(run_dir.glob("**/*.ckpt"))


def test_a_yaml_syntax_error_names_the_file(tiny_args, run_dir, capsys) -> None:
    bad = run_dir / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: [1, 2\nmodel: {}\n")
    with pytest.raises(SystemExit) as stop:
        cli_main(["fit", f"--config={bad}", *tiny_args])
    assert stop.value.code == 2
    err = flat(capsys.readouterr().err)
    assert f"--config {bad} is not valid YAML" in err and "line 2" in err
    assert "<unicode string>" not in err


class Unpicklable:
    """A value whose pickling fails midway through a checkpoint write, the same way everywhere."""

    def __reduce__(self):
        raise pickle.PicklingError("this value refuses to be pickled")


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    with pytest.raises(pickle.PicklingError, match="refuses to be pickled"):
        io.save_checkpoint({"step": torch.tensor(2), "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


def test_resume_command_replaces_any_checkpoint_option() -> None:
    assert resume_args(["fit", "--ckpt_path", "a.ckpt", "--x=1"]) == [
        "fit",
        "--x=1",
        "--ckpt_path",
        "last",
    ]
    assert resume_args(["fit", "--ckpt_path=a.ckpt"]) == ["fit", "--ckpt_path", "last"]


# Slow: real processes, stopped from outside.


class SlowDown(L.Callback):
    """Makes each training batch last at least `seconds`, so a test can hit a run mid-epoch."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def start_fit(
    folder: Path, data_dir: Path, *extra: str, env: dict | None = None
) -> subprocess.Popen:
    """`python -m fashion_lightning fit` on the synthetic data in `folder`, 4 epochs of 20 batches."""
    slow = '--trainer.callbacks+={"class_path": "test_resilience.SlowDown"}'
    cmd = [
        *COMMAND,
        "fit",
        config("mlp"),
        f"--data.data_dir={data_dir}",
        "--data.val_size=16",
        "--data.batch_size=4",
        "--trainer.max_epochs=4",
        "--trainer.limit_test_batches=0",
        "--trainer.enable_progress_bar=false",
        slow,
        *extra,
    ]
    path = os.pathsep.join([str(Path(__file__).parent), *sys.path])
    env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen(cmd, cwd=folder, env=env, **pipes)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out + err


def wait_for(path: Path, process: subprocess.Popen) -> None:
    """Wait until `path` exists (the run is training), then a moment more (mid-epoch)."""
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, finish(process)[1]
        time.sleep(0.05)
    time.sleep(0.25)


STOP_CASES = [  # signal, two CPU processes under DDP
    (signal.SIGKILL, False),
    (signal.SIGTERM, False),
    (signal.SIGINT, False),
    (signal.SIGTERM, True),  # what SLURM and Kubernetes send
]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "ddp"), STOP_CASES)
def test_a_process_stopped_from_outside_resumes_bit_identically(
    signum, ddp, fake_data_dir, tmp_path
):
    extra = (
        ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
        if ddp
        else []
    )
    if signum == signal.SIGKILL:  # nothing runs on kill -9: the timed last.ckpt is what remains
        extra.append("--last_checkpoint.every_minutes=0.002")
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    reference.mkdir(), stopped.mkdir()
    code, log = finish(start_fit(reference, fake_data_dir, *extra))
    assert code == 0, log

    process = start_fit(stopped, fake_data_dir, *extra)
    last = stopped / "lightning_logs/version_0/checkpoints/last.ckpt"
    wait_for(last, process)
    process.send_signal(signum)
    code, log = finish(process)
    assert code == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[signum], log
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 4 * 20 // (2 if ddp else 1)
    if signum != signal.SIGKILL:
        assert f"last.ckpt was written at step {step}" in flat(log) and "--ckpt_path last" in flat(
            log
        )

    code, log = finish(start_fit(stopped, fake_data_dir, *extra, "--ckpt_path", "last"))
    assert code == 0, log
    assert "resuming from lightning_logs/version_0/checkpoints/last.ckpt" in flat(log)
    assert not (stopped / "lightning_logs/version_1").exists()
    expected, resumed = final_weights(reference), final_weights(stopped)
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key


@pytest.mark.slow
def test_a_slurm_requeue_resumes_bit_identically(fake_data_dir, tmp_path) -> None:
    """Lightning's auto-requeue on SIGUSR1, under a faked SLURM job whose `scontrol` records its
    arguments: the hpc checkpoint and last.ckpt hold the same step, the job asks to be requeued,
    and the requeued job (the same command, with --ckpt_path last) ends bit-identical."""
    bin_dir, reference, job = tmp_path / "bin", tmp_path / "reference", tmp_path / "job"
    for folder in (bin_dir, reference, job):
        folder.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "scontrol.args"}\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_NAME": "fit",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    code, log = finish(start_fit(reference, fake_data_dir))
    assert code == 0, log

    process = start_fit(job, fake_data_dir, "--ckpt_path", "last", env=slurm)
    last = job / "lightning_logs/version_0/checkpoints/last.ckpt"
    wait_for(last, process)
    process.send_signal(signal.SIGUSR1)
    code, log = finish(process)
    assert code == 138, log
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    hpc = torch.load(job / "lightning_logs/hpc_ckpt_1.ckpt", weights_only=True)
    assert hpc["global_step"] == torch.load(last, weights_only=True)["global_step"]

    code, log = finish(start_fit(job, fake_data_dir, "--ckpt_path", "last", env=slurm))
    assert code == 0, log
    expected, resumed = final_weights(reference), final_weights(job)
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key


@pytest.mark.parametrize("every", [1, 2])  # ModelCheckpoint saves at the epoch's end, or val's
def test_last_ckpt_records_the_best_checkpoint_of_its_own_epoch(every, tiny_args, run_dir, capsys):
    """last.ckpt is written after ModelCheckpoint has saved the epoch's best, so resuming a
    finished run tests a checkpoint that exists (it once named the best it had just replaced)."""
    args = ["fit", config("mlp"), *tiny_args, "--trainer.limit_train_batches=1"]
    args += ["--trainer.max_epochs=6", f"--trainer.check_val_every_n_epoch={every}"]
    cli = cli_main(args)
    best = cli.trainer.checkpoint_callback.best_model_path
    assert "/epoch=5-" in best  # the last of 6 epochs was the best: the case that failed
    last = torch.load(cli.trainer.checkpoint_callback.last_model_path, weights_only=False)
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["best_model_path"] == best and Path(best).is_file()
    capsys.readouterr()
    resumed = cli_main([*args, "--ckpt_path=last"])  # the finished run: nothing left but the test
    assert "resuming from" in flat(capsys.readouterr().out)
    assert resumed.trainer.global_step == 6 and "test/acc" in resumed.trainer.callback_metrics

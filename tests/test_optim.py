"""The optimizer options of the shared module (airbench's methods): BatchNorm/bias parameter
groups under the schedule, Lookahead, Muon for conv weights, and a compiled network whose
checkpoint every command loads."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from fashion_lightning import internals
from fashion_lightning.cli.main import cli_main
from fashion_lightning.models import CNN
from fashion_lightning.optim import muon
from fashion_lightning.optim.build import OptimizerOptions, build_optimizer
from fashion_lightning.optim.chain import OptimizerChain
from fashion_lightning.optim.lookahead import Lookahead
from fashion_lightning.optim.muon import FlatMuon, newton_schulz
from tests.conftest import assert_user_error, config


def test_norm_group_gets_its_own_rate_and_decay_and_the_schedule_scales_both(tiny_args):
    cli = cli_main(
        ["fit", config("cnn_fast"), *tiny_args, "--model.norm_lr_scale=8"]
        + ["--model.norm_weight_decay=0", "--trainer.limit_test_batches=0", "--model.muon_lr=null"]
    )  # without the recipe's Muon: AdamW holds both groups
    weights, norm = cli.trainer.optimizers[0].param_groups
    assert all(p.ndim <= 1 for p in norm["params"]) and all(p.ndim > 1 for p in weights["params"])
    assert norm["initial_lr"] == pytest.approx(8 * weights["initial_lr"]) == pytest.approx(0.04)
    assert (norm["weight_decay"], weights["weight_decay"]) == (0, 0.05)
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    scheduler.last_epoch = 3
    scheduler.step()  # to step 4 of 10, mid-decay
    factor = scheduler.lr_lambdas[0](4)
    assert 0 < factor < 1
    for group in (weights, norm):
        assert group["lr"] == pytest.approx(group["initial_lr"] * factor)


def test_default_options_keep_one_group_in_parameter_order() -> None:
    net = CNN(channels=(4,))
    optimizer = build_optimizer(net.named_parameters(), torch.optim.AdamW, OptimizerOptions())
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]["params"] == list(net.parameters())


def test_lookahead_pulls_back_every_k_steps_and_resumes_exactly() -> None:
    """SGD steps on a constant gradient g: the fast weights move -lr*g a step; every 3 steps the
    slow weights move alpha of the way and the fast ones restart there."""
    w = nn.Parameter(torch.zeros(2))
    lookahead = Lookahead(torch.optim.SGD([w], lr=1.0), every=3, alpha=0.5)
    for _ in range(3):
        w.grad = torch.ones(2)
        lookahead.step()
    assert torch.equal(w.detach(), torch.full((2,), -1.5))  # fast at -3, slow 0 -> -1.5
    w.grad = torch.ones(2)
    lookahead.step()  # fast -2.5, slow still -1.5
    saved = copy.deepcopy(lookahead.state_dict())
    restored = Lookahead(torch.optim.SGD([w2 := nn.Parameter(w.detach().clone())], lr=1.0), 3, 0.5)
    restored.load_state_dict(saved)
    for opt, param in ((lookahead, w), (restored, w2)):
        for _ in range(2):
            param.grad = torch.ones(2)
            opt.step()
    assert torch.equal(w, w2) and torch.equal(w.detach(), torch.full((2,), -3.0))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_flat_muon_steps_a_conv_weight_as_torch_muon_steps_its_matrix(memory_format) -> None:
    torch.manual_seed(0)
    conv = nn.Parameter(torch.randn(6, 3, 3, 3).contiguous(memory_format=memory_format))
    matrix = nn.Parameter(conv.detach().reshape(6, -1).clone())
    flat, plain = FlatMuon([conv], lr=0.1), torch.optim.Muon([matrix], lr=0.1)
    before = conv.detach().clone()
    for _ in range(3):
        grad = torch.randn(6, 3, 3, 3)
        conv.grad = grad.contiguous(memory_format=memory_format)
        matrix.grad = grad.reshape(6, -1)
        flat.step()
        with internals.muon_newton_schulz(newton_schulz):  # FlatMuon's orthogonalization
            plain.step()
    assert not torch.equal(conv.detach(), before)
    torch.testing.assert_close(conv.detach().reshape(6, -1), matrix.detach())
    buffer = flat.state_dict()["state"][0]["momentum_buffer"]
    assert buffer.shape == conv.shape  # saved as the weight's shape


@pytest.mark.parametrize("shape", [(6, 27), (27, 6)])
def test_newton_schulz_is_torchs_bit_for_bit_in_bfloat16_and_orthogonal_in_float32(shape) -> None:
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    args = (muon.DEFAULTS["ns_coefficients"], muon.DEFAULTS["ns_steps"], muon.DEFAULTS["eps"])
    bf16 = newton_schulz(grad, dtype=torch.bfloat16)
    assert torch.equal(bf16, internals.TORCH_NEWTON_SCHULZ(grad, *args))
    fp32 = newton_schulz(grad, dtype=torch.float32)
    assert fp32.dtype == torch.float32 and fp32.shape == grad.shape
    singular_values = torch.linalg.svdvals(fp32)
    assert singular_values.min() > 0.5 and singular_values.max() < 1.5  # Muon's U S' V^T
    torch.testing.assert_close(fp32, bf16.float(), atol=0.03, rtol=0)


def test_flat_muon_steps_through_newton_schulz_and_gives_torch_its_own_back(monkeypatch) -> None:
    calls = []

    def recorded(grad, *args):
        calls.append(grad.shape)
        return newton_schulz(grad, *args)

    monkeypatch.setattr(muon, "newton_schulz", recorded)
    conv = nn.Parameter(torch.randn(4, 2, 3, 3))
    conv.grad = torch.randn_like(conv)
    FlatMuon([conv], lr=0.1).step()
    assert calls == [torch.Size([4, 18])]  # a torch release that renames its function fails here
    assert torch.optim._muon._zeropower_via_newtonschulz is internals.TORCH_NEWTON_SCHULZ


def test_muon_takes_hidden_weights_and_the_chain_round_trips() -> None:
    net = CNN(channels=(4, 8), hidden_size=16)
    options = OptimizerOptions(muon_lr=0.02, lookahead_every=2)
    optimizer = build_optimizer(net.named_parameters(), torch.optim.AdamW, options)
    chain = optimizer.optimizers[0]
    assert isinstance(chain, OptimizerChain)
    muon, adamw = chain.optimizers
    muon_params = {id(p) for p in muon.param_groups[0]["params"]}
    matrices = [p for p in net.parameters() if p.ndim >= 2]
    assert [id(p) in muon_params for p in matrices] == [True] * (len(matrices) - 1) + [False]
    for _ in range(3):
        net(torch.randn(4, 1, 28, 28)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    rebuilt = build_optimizer(net.named_parameters(), torch.optim.AdamW, options)
    rebuilt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert rebuilt.optimizers[0].optimizers[0].state is rebuilt.state  # the members share it
    assert repr(rebuilt.state_dict()) == repr(optimizer.state_dict())


@pytest.mark.parametrize(
    ("option", "word"),
    [("--model.muon_lr=0", "muon_lr"), ("--model.lookahead_alpha=0", "lookahead_alpha")],
)
def test_bad_optimizer_options_are_refused(option, word, tiny_args, capsys) -> None:
    assert_user_error(["fit", config("cnn_fast"), *tiny_args, option], capsys, f"--model.{word}")


@pytest.mark.slow  # torch.compile builds C++ kernels: about 35 s on 2 cores
def test_a_compiled_fit_saves_plain_keys_that_test_loads(tiny_args, run_dir: Path) -> None:
    options = ["--model.compile=true", "--trainer.check_val_every_n_epoch=1"]
    fit = cli_main(["fit", config("cnn_fast"), *tiny_args, *options])
    best = fit.trainer.checkpoint_callback.best_model_path
    keys = torch.load(best, weights_only=True)["state_dict"].keys()
    assert any(k.startswith("net.") for k in keys)
    assert not [k for k in keys if "_orig_mod" in k]
    tested = cli_main(["test", f"--ckpt_path={best}", "--trainer.enable_progress_bar=false"])
    assert tested.trainer.callback_metrics["test/acc"] >= 0

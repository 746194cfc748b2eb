"""CpuAdam (the SAE trainer's optimizer on CPU) is torch.optim.Adam bit for bit."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.solvers.adam import CpuAdam


def _params(seed: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (5, 7), (7,)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def _grads(params: list[torch.Tensor], g: torch.Generator, scale: float) -> None:
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=p.dtype)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lr=st.floats(1e-5, 1e-1),
       beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999),
       scale=st.floats(1e-6, 1e3), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_cpu_adam_equals_torch_adam_bit_for_bit(seed, lr, beta1, beta2, scale, dtype):
    ours, ref = _params(seed, dtype), _params(seed, dtype)
    opt = CpuAdam(ours, lr=lr, betas=(beta1, beta2))
    opt_ref = torch.optim.Adam(ref, lr=lr, betas=(beta1, beta2))
    g, g_ref = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 1)
    for step in range(12):
        _grads(ours, g, scale)
        _grads(ref, g_ref, scale)
        if step == 4:  # the trainer changes lr every step (warm-up / decay)
            for o in (opt, opt_ref):
                o.param_groups[0]["lr"] = lr / 3
        if step == 7:  # the trainer zeroes moments of resampled latents in place
            for o, ps in ((opt, ours), (opt_ref, ref)):
                o.state[ps[0]]["exp_avg"].index_fill_(0, torch.tensor([1, 3]), 0)
        if step == 9:  # a parameter without a gradient is left alone
            ours[1].grad = ref[1].grad = None
        opt.step()
        opt_ref.step()
        for p, q in zip(ours, ref, strict=True):
            assert torch.equal(p, q)
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in ours)


def test_state_dicts_load_into_either_optimizer():
    """A checkpoint written with one optimizer continues bit-identically with the other."""
    ours, ref = _params(0, torch.float64), _params(0, torch.float64)
    opt_ref = torch.optim.Adam(ref, lr=1e-3, betas=(0.8, 0.99))
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        _grads(ref, g, 1.0)
        opt_ref.step()
    with torch.no_grad():
        for p, q in zip(ours, ref, strict=True):
            p.copy_(q)
    opt = CpuAdam(ours, lr=0.5, betas=(0.1, 0.2))
    opt.load_state_dict(opt_ref.state_dict())
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["betas"] == (0.8, 0.99)
    # ours → torch as well
    back = torch.optim.Adam(_params(0, torch.float64), lr=0.5)
    back.load_state_dict(opt.state_dict())
    assert back.state_dict()["param_groups"] == opt_ref.state_dict()["param_groups"]
    for i, s in opt_ref.state_dict()["state"].items():
        for key, value in s.items():
            assert torch.equal(opt.state_dict()["state"][i][key], value), key
    for _ in range(3):
        gs = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in ours]
        for p, q, gr in zip(ours, ref, gs, strict=True):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        opt_ref.step()
        for p, q in zip(ours, ref, strict=True):
            assert torch.equal(p, q)

"""kfcpo's fused Adam takes the same steps as torch's reference (for-loop) Adam."""

import pytest
import torch

from kfcpo.adam import AdamStepper, adam


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_adam_follows_the_reference_implementation(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=gen, dtype=dtype) for shape in [(7, 5), (5,), (1,)]]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    ref = [torch.nn.Parameter(t.clone()) for t in start]
    opt, ref_opt = adam(ours, lr=1e-2), torch.optim.Adam(ref, lr=1e-2, foreach=False, fused=False)
    for _ in range(25):
        grads = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in start]
        for params, optimizer in ((ours, opt), (ref, ref_opt)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    for p, q, s in zip(ours, ref, start, strict=True):
        assert not torch.equal(p, s)  # it moved
        torch.testing.assert_close(p.detach(), q.detach(), **tol)
    assert opt.state_dict()["state"].keys() == ref_opt.state_dict()["state"].keys()


def _same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    return sa.keys() == sb.keys() and all(
        sa[i].keys() == sb[i].keys() and all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i]) for i in sa
    )


@pytest.mark.parametrize("make", [lambda ps: adam(ps, lr=1e-2), lambda ps: torch.optim.SGD(ps, lr=1e-2)])
def test_adam_stepper_is_optimizer_step_bit_for_bit(make) -> None:
    """AdamStepper's direct fused-kernel call (and its fallback for any other optimizer)
    leaves exactly the parameters and state `optimizer.step()` does, also across a learning
    rate changed between steps (the identity preconditioner's decay)."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=gen) for shape in [(2, 7, 5), (2, 1, 5), (3,)]]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    ref = [torch.nn.Parameter(t.clone()) for t in start]
    opt, ref_opt = make(ours), make(ref)
    stepper = AdamStepper(opt, ours)
    for i in range(12):
        if i == 6:
            for o in (opt, ref_opt):
                o.param_groups[0]["lr"] = 3e-3
        grads = [torch.randn(t.shape, generator=gen) for t in start]
        stepper.step([g.clone() for g in grads])
        for p, g in zip(ref, grads, strict=True):
            p.grad = g.clone()
        ref_opt.step()
    assert stepper.direct == isinstance(opt, torch.optim.Adam)
    for p, q in zip(ours, ref, strict=True):
        assert torch.equal(p, q)
    assert _same_state(opt, ref_opt)


def test_adam_stepper_respects_step_hooks() -> None:
    """A hooked optimizer goes through `optimizer.step()`, so its hooks run."""
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = adam(params, lr=1e-2)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    stepper = AdamStepper(opt, params)
    for _ in range(3):
        stepper.step([torch.ones(3)])
    assert len(calls) == 3
    assert not stepper.direct

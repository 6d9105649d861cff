"""kfcpo's fused Adam takes the same steps as torch's reference (for-loop) Adam."""

import pytest
import torch

from kfcpo.adam import adam


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

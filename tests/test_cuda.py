"""The same numerics on a CUDA device (skipped on machines without one, such as CI)."""

import pytest
import torch
from torch import nn

import contdepth as cd

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scheme", ["rk4", "dopri5", "ab3", cd.LMResNetScheme(-0.05)])
def test_integrate_on_cuda_matches_cpu(dtype, scheme):
    net = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)).to(dtype)
    x0 = torch.randn(4, 8, dtype=dtype)
    cpu = cd.integrate(lambda t, x: net(x), x0, scheme=scheme, n_steps=5).state
    net_gpu = net.cuda()
    gpu = cd.integrate(lambda t, x: net_gpu(x), x0.cuda(), scheme=scheme, n_steps=5).state
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)


@cuda
def test_adaptive_on_cuda():
    x0 = torch.ones(3, device="cuda", dtype=torch.float64)
    solution = cd.integrate_adaptive(lambda t, x: -x, x0, rtol=1e-8, atol=1e-10, breakpoints=[0.5])
    state, stats = solution.state, solution.stats
    assert state.device.type == "cuda" and 0.5 in stats.step_ends
    torch.testing.assert_close(state.cpu(), torch.full((3,), 0.36787944117144233, dtype=torch.float64),
                               rtol=1e-7, atol=0)


@cuda
@pytest.mark.parametrize("basis", ["piecewise_constant", "piecewise_linear", "legendre"])
def test_continuous_block_on_cuda_forward_backward_refine(basis):
    template = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    block = cd.ContinuousBlock(template, basis=basis, n_basis=3, scheme="rk4", n_steps=3).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    cpu_out = block(x)
    cpu_out.square().sum().backward()
    cpu_grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    block.cuda()
    gpu_out = block(x.cuda())
    gpu_out.square().sum().backward()
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-10, atol=1e-10)
    for p, g in zip(block.parameters(), cpu_grads):
        assert p.grad.device.type == "cuda"
        torch.testing.assert_close(p.grad.cpu(), g, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        before = block(x.cuda())
        block.refine()
        with block.manifest(n_steps=3):
            torch.testing.assert_close(block(x.cuda()), before, rtol=0, atol=1e-10)
        assert all(p.device.type == "cuda" for p in block.parameters())

"""CPU/GPU parity of the batched ops (runs only where CUDA exists)."""

import pytest
import torch

from stec_vision.augment import ColorJitter, GaussianBlur, build_two_views, warp_affine
from stec_vision.augment_geometry import RandomResizedCropFlip

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_ops_agree_on_cpu_and_gpu():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 40, 40)
    theta = RandomResizedCropFlip(24).sample_theta(16, 40, 40, torch.device("cpu"))
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0)
    factors, order, _ = jitter.sample(16, torch.device("cpu"))
    sigma = torch.rand(16) * 2
    blur = GaussianBlur(p=1.0, kernel_size=5)
    cpu = blur.apply(
        jitter.apply(warp_affine(x, theta, 24), factors, jitter.permutations[order]), sigma
    )
    gpu_jitter = jitter.cuda()
    gpu = blur.apply(
        gpu_jitter.apply(
            warp_affine(x.cuda(), theta.cuda(), 24),
            factors.cuda(),
            gpu_jitter.permutations[order.cuda()],
        ),
        sigma.cuda(),
    )
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)


@cuda
def test_pipeline_runs_on_gpu_with_params_on_device():
    views = build_two_views("imagenet", 32).cuda()
    x = (torch.rand(8, 3, 48, 48, device="cuda") * 255).to(torch.uint8)
    va, vb, pa, pb = views(x)
    assert va.is_cuda and all(v.is_cuda for v in pa.values())
    targets = views.action_space().targets(pa, pb)
    assert targets.classes.is_cuda

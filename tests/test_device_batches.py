"""Attack batches sized from the device's memory (GPU-throughput issue, part 3), checked on the CPU: the
arithmetic, the CPU keeping each preset's batch size, and the retry at half size when a batch runs out of
device memory."""

import pytest
import torch
import torch.nn as nn

from robustbench_leak.attacks.norm_results import counted_batches
from robustbench_leak.runtime import ATTACK_MEMORY_SHARE, MAX_DEVICE_BATCH, device_batch_size, fit_batch

CPU = torch.device("cpu")


def test_fit_batch_takes_a_share_of_free_memory_within_bounds():
    assert fit_batch(1e6, 1e9, 10_000) == int(ATTACK_MEMORY_SHARE * 1e3)
    assert fit_batch(1e6, 1e9, 100) == 100  # never more than the images to attack
    assert fit_batch(1.0, 1e15, 10**9) == MAX_DEVICE_BATCH
    assert fit_batch(1e12, 1e9, 100) == 1  # at least one image, however large
    assert fit_batch(0.0, 1e9, 50) == 50


def test_the_cpu_keeps_the_presets_batch_size():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    assert device_batch_size(model, torch.rand(40, 1, 4, 4), CPU, 7, 40) == 7
    assert device_batch_size(model, torch.rand(40, 1, 4, 4), CPU, 256, 40, gradients=0) == 256


def test_a_batch_out_of_device_memory_is_retried_at_half_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, labels = torch.rand(23, 1, 4, 4), torch.randint(0, 3, (23,))
    sizes = []

    def engine(m, xb, lb, scale):
        sizes.append(len(xb))
        out = m(xb)  # counted as a forward pass even when the batch then fails
        if len(xb) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return out.detach() * scale, lb

    (out, lab), passes = counted_batches(engine, model, x, labels, 16, CPU, "test", False, scale=2.0)
    (ref, ref_lab), ref_passes = counted_batches(engine, model, x, labels, 4, CPU, "test", False, scale=2.0)
    assert sizes[:3] == [16, 8, 4] and max(sizes[3:]) <= 4  # halved until it fits, then kept
    assert torch.equal(out, ref) and torch.equal(lab, labels)
    assert passes == ref_passes == 1.0  # the failed tries' passes are not counted


def test_out_of_memory_at_one_image_is_raised():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def engine(m, xb, lb):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):  # an engine that cannot run one image fails, not loops
        counted_batches(engine, model, torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), 2, CPU, "t", False)

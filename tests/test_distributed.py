"""Multi-process (issue #20): DistributedDataParallel over SAConv2d, LinformerSelfAttention and
AugmentPipe (+ a small discriminator) with AdaController, two gloo processes on the CPU, gives
the gradients and controller state of one process with the whole batch."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyops

WORLD = 2
B = 4  # the whole batch; each rank gets B // WORLD


def _models():
    torch.manual_seed(0)
    sac = pyops.SAConv2d(3, 4, 3, padding=1, backend="cpu")
    with torch.no_grad():  # leave the initial state (S == 1, zero contexts) for a generic one
        for t in (sac.switch.weight, sac.weight_diff, sac.pre_context.weight, sac.post_context.weight):
            t.copy_(0.3 * torch.randn_like(t))
    lin = pyops.LinformerSelfAttention(8, 6, k=3, heads=2, backend="cpu")
    disc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 1))
    return sac, lin, disc


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 3, 7, 8, generator=g), torch.randn(B, 6, 8, generator=g), torch.rand(B, 3, 8, 8, generator=g) * 2 - 1


STEPS = 4


def _augment(pipe, images, seed):
    torch.manual_seed(seed)
    return pipe(images)


def _grads(module):
    return [p.grad.clone() for p in module.parameters()]


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        sac, lin, disc = _models()
        x_sac, x_lin, images = _data()
        part = slice(rank * (B // WORLD), (rank + 1) * (B // WORLD))
        results = {}
        for name, module, x in (("sac", sac, x_sac), ("lin", lin, x_lin)):
            ddp = torch.nn.parallel.DistributedDataParallel(module)
            ddp(x[part]).square().mean().backward()
            results[name] = _grads(module)
        pipe = pyops.AugmentPipe.from_preset("bgc", p=0.5, backend="cpu")
        ctrl = pyops.AdaController(pipe, interval=2, kimg=0.01)
        ddp = torch.nn.parallel.DistributedDataParallel(disc)
        ps = []
        for step in range(STEPS):
            logits = ddp(_augment(pipe, images[part], 100 * step + rank))
            logits.mean().backward()
            ctrl.update(logits.detach())
            ps.append(float(pipe.p))
        results["disc"] = _grads(disc)
        results["p"] = ps
        results["r_t"] = float(ctrl.r_t)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _single_process():
    sac, lin, disc = _models()
    x_sac, x_lin, images = _data()
    results = {}
    for name, module, x in (("sac", sac, x_sac), ("lin", lin, x_lin)):
        module(x).square().mean().backward()
        results[name] = _grads(module)
    pipe = pyops.AugmentPipe.from_preset("bgc", p=0.5, backend="cpu")
    ctrl = pyops.AdaController(pipe, interval=2, kimg=0.01)
    b = B // WORLD
    ps = []
    for step in range(STEPS):  # each half augmented with its rank's generator state
        aug = torch.cat([_augment(pipe, images[r * b:(r + 1) * b], 100 * step + r) for r in range(WORLD)])
        logits = disc(aug)
        logits.mean().backward()
        ctrl.update(logits.detach())
        ps.append(float(pipe.p))
    results["disc"] = _grads(disc)
    results["p"] = ps
    results["r_t"] = float(ctrl.r_t)
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_ddp_matches_one_process():
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
        ranks = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(WORLD)]
    want = _single_process()
    for name in ("sac", "lin", "disc"):
        for r in ranks:
            for i, (a, b) in enumerate(zip(r[name], want[name])):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, i=i, n=name: f"{n} grad {i}: {m}")
    for r in ranks:  # the controller: the same p after every step and the same r_t on every rank
        assert r["p"] == pytest.approx(want["p"], abs=1e-6)
        assert r["r_t"] == pytest.approx(want["r_t"], abs=1e-6)
    assert want["p"][-1] != 0.5  # the controller moved p

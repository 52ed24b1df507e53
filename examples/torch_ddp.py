"""Data-parallel training of lrtdense.torch layers: DistributedDataParallel over two CPU
processes (gloo, localhost) reaches what one process reaches with the combined batch.

Run: python examples/torch_ddp.py [--steps 20] [--world-size 2]      (prints JSON)

Why it matches: each of the W processes computes loss_p = mean NLL over its B examples +
KL / N and DDP averages the gradients, so the step follows the gradient of
mean NLL over all W * B examples + KL / N: the divergence is counted once per example of the
data set, not once per process (summing the processes' losses would count it W times). The
noise is drawn for the combined batch from one seeded generator and each process takes its
rows, so the two runs see the same numbers and agree to rounding (float64). The regression is
y = sin(3 x) + noise on 1-D inputs, a 1-32-32-1 network of DenseLocalReparameterization layers.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    steps=20,
    world_size=2,
    batch=64,            # the combined batch: each process takes batch / world_size rows
    num_examples=512,
    learning_rate=0.01,
    seed=0,
)
# -------------------------------------------------------------------------------------------

import argparse
import json
import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lrtdense.torch as LT
from lrtdense.torch.functional import gaussian_nll

SIGMA = 0.1


class Net(torch.nn.Module):
    """1-32-32-1 LRT layers; ``forward(x, noise)`` takes one noise dict per layer (or None)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            LT.DenseLocalReparameterization(1, 32, "relu", dtype=torch.float64),
            LT.DenseLocalReparameterization(32, 32, "relu", dtype=torch.float64),
            LT.DenseLocalReparameterization(32, 1, dtype=torch.float64))

    def forward(self, x, noise=None):
        for i, layer in enumerate(self.layers):
            x = layer(x, noise=None if noise is None else noise[i])
        return x


def data_and_noise(s):
    """The data (N, 1) and, per step, the combined batch's indices and noise (one seeded
    torch.Generator, the same in every process)."""
    g = torch.Generator().manual_seed(s["seed"])
    x = torch.rand(s["num_examples"], 1, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(3 * x) + SIGMA * torch.randn(x.shape, generator=g, dtype=torch.float64)
    steps = []
    for _ in range(s["steps"]):
        index = torch.randperm(s["num_examples"], generator=g)[:s["batch"]]
        noise = [{"kernel": torch.randn(s["batch"], units, generator=g, dtype=torch.float64)}
                 for units in (32, 32, 1)]
        steps.append((index, noise))
    return x, y, steps


def train(model, s, rank=0, world_size=1):
    """``steps`` Adam steps on this process's rows of each combined batch; returns the losses."""
    torch.manual_seed(s["seed"])
    x, y, steps = data_and_noise(s)
    rows = slice(rank * s["batch"] // world_size, (rank + 1) * s["batch"] // world_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=s["learning_rate"])
    layers = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    losses = []
    for index, noise in steps:
        index = index[rows]
        out = model(x[index], [{k: v[rows] for k, v in n.items()} for n in noise])
        loss = gaussian_nll(y[index], out, SIGMA) + LT.divergence(layers) / s["num_examples"]
        optimizer.zero_grad()
        loss.backward()                   # DDP: the gradients averaged over the processes
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _worker(rank, s, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=s["world_size"])
    torch.manual_seed(s["seed"])
    model = torch.nn.parallel.DistributedDataParallel(Net())   # broadcasts rank 0's weights
    train(model, s, rank, s["world_size"])
    if rank == 0:
        torch.save(model.module.state_dict(), os.path.join(out_dir, "ddp.pt"))
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(**overrides):
    """Trains under DDP and in one process; returns {"max_abs_difference", ...}."""
    s = {**SETTINGS, **overrides}
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(s, _free_port(), out_dir), nprocs=s["world_size"], join=True)
        ddp = torch.load(os.path.join(out_dir, "ddp.pt"))
    torch.manual_seed(s["seed"])
    single = Net()
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    losses = train(single, s)
    final = single.state_dict()
    diff = max(float((final[k] - v).abs().max()) for k, v in ddp.items())
    moved = max(float((final[k] - v).abs().max()) for k, v in initial.items())
    return {"steps": s["steps"], "world_size": s["world_size"], "max_abs_difference": diff,
            "max_parameter_change": moved, "first_loss": losses[0], "last_loss": losses[-1]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"])
    parser.add_argument("--world-size", type=int, default=SETTINGS["world_size"])
    args = parser.parse_args()
    print(json.dumps(main(steps=args.steps, world_size=args.world_size)))

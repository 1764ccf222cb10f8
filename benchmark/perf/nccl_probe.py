"""One rank's probe of the process group torchrun starts (run by `gpu_check`, not by hand):

    torchrun --nproc_per_node 1 --standalone -m lowshot.benchmark.perf.nccl_probe --device cuda --out probe.json

Joins the group through `benchmark.distributed.init` (nccl on CUDA, gloo on the CPU), runs the collectives the
sharded extraction uses (a tensor all-reduce on the device, object broadcast and gather, the failure vote, a
barrier) and writes what it saw to --out.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist

from lowshot.benchmark import distributed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    device = distributed.init("cuda" if a.device.startswith("cuda") else "cpu")
    try:
        total = torch.ones(4, device=device)
        dist.all_reduce(total)
        probe = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "device": device,
                 "all_reduce": float(total[0]), "broadcast": distributed.broadcast(f"rank {dist.get_rank()}"),
                 "gather": distributed.gather(dist.get_rank())}
        distributed.raise_if_any_failed(None, "the probe")
        dist.barrier()
    finally:
        distributed.shutdown()
    with open(a.out, "w") as f:
        json.dump(probe, f)


if __name__ == "__main__":
    main()

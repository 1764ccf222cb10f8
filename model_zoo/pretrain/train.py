"""The training loop: `train(cfg, out, ...)` (the command is `lowshot pretrain`, in benchmark/cli.py).

One process per device; under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set) the model is wrapped in
DistributedDataParallel (NCCL on GPUs, Gloo on CPUs) and each process reads its DistributedSampler shard.
Every random draw of a step (crops, jitter, masks, noise, drop-path) comes from seeds derived from
(seed, step, rank), the data order from (seed, epoch): a run resumed from a checkpoint continues exactly
as the uninterrupted run would (bit-identical on the same machine and library versions).
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .augment import MultiCrop
from .checkpoint import backbone_config, load_training_checkpoint, save_backbone, save_training_checkpoint
from .config import PretrainConfig
from .data import StepBatches, build_dataset
from .model import PretrainModel
from .schedules import step_values

CHECKPOINT = "checkpoint.pt"


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank, stream]).generate_state(1)[0])


def init_distributed(device: str | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; (0, 1, device) for a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    return rank, world, torch.device(device)


def build_optimizer(model: PretrainModel, cfg: PretrainConfig) -> torch.optim.Optimizer:
    betas = (0.9, 0.95) if cfg.method == "mae" else (0.9, 0.999)
    return torch.optim.AdamW(model.parameter_groups(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


def _format_logs(logs: dict) -> str:
    return " ".join(f"{k} {float(torch.as_tensor(v).detach()):.4f}" for k, v in logs.items())


def train(cfg: PretrainConfig, out: str | Path, resume: bool = False, stop_at: int | None = None,
          device: str | None = None, name: str = "backbone", source=None,
          log=functools.partial(print, flush=True), bf16: bool = False, on_step=None) -> dict:
    """Train (or continue) a run in `out`; stop after `stop_at` steps if given (for tests and time slices).
    Images come from `source` when given (see `data.build_dataset`), else from the image folder `cfg.data`.

    `bf16`: the forward pass and the losses under bf16 autocast (CUDA or CPU; weights, gradients and the optimizer
    stay float32).

    Writes out/checkpoint.pt every cfg.ckpt_every steps and at the end, and out/<name>.safetensors once the
    run has done cfg.steps steps. Returns {"step", "checkpoint", "backbone" (or None), "model", "losses" (the loss
    of each step this call ran)}. The caller's random number generators are as they were afterwards (the run seeds
    its own).
    `on_step(step, encoder)` is called on rank 0 with the encoder the evaluation uses (the EMA teacher, or MAE's
    encoder) before the first step of a new run (step 0) and after every step; it must leave the encoder as it
    found it (a low-shot probe: `lowshot pretrain --eval-every`). Every step seeds its own random draws, so the
    run's weights are the same with or without it.
    """
    with torch.random.fork_rng():
        return _train(cfg, out, resume, stop_at, device, name, source, log, bf16, on_step)


def _train(cfg: PretrainConfig, out, resume, stop_at, device, name, source, log, bf16, on_step=None) -> dict:
    out = Path(out)
    rank, world, device = init_distributed(device)
    ckpt_path = out / CHECKPOINT
    start = 0
    if resume and ckpt_path.exists():
        saved = json.loads(torch.load(ckpt_path, map_location="cpu", weights_only=True)["config"])
        if saved != json.loads(cfg.to_json()):
            changed = sorted(k for k in saved if saved[k] != json.loads(cfg.to_json()).get(k))
            log(f"resume: using the checkpoint's config (differs from the arguments in {changed})")
            cfg = PretrainConfig.from_dict(saved)
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    model = PretrainModel(cfg).to(device)
    optimizer = build_optimizer(model, cfg)
    if resume and ckpt_path.exists():
        start = load_training_checkpoint(ckpt_path, model, optimizer, map_location=device)["step"]
        log(f"resumed from {ckpt_path} at step {start}")
    elif resume:
        log(f"resume: no checkpoint at {ckpt_path}, starting from scratch")
    net = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel
        # centres are all-reduced in the forward pass: no buffer broadcast (the keyword was renamed in torch 2.14)
        no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else "broadcast_buffers": False}
        net = ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
    dataset = build_dataset(cfg, source)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(dataset, cfg.batch_size, cfg.seed, rank, world, start),
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    multicrop = MultiCrop.from_config(cfg)
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    if rank == 0:
        log(f"pretrain {cfg.method}: steps {start} -> {end} of {cfg.steps}, {world} process(es) x batch "
            f"{cfg.batch_size}, {dataset.identity}, device {device}, "
            f"{sum(p.numel() for p in model.student.parameters()) / 1e6:.2f}M backbone parameters"
            + (", bf16 autocast" if bf16 else ""))
    batches, step, t0 = iter(loader), start, time.time()
    losses = torch.zeros(max(0, end - start), device=device)  # on the device: no synchronisation per step
    model.train()
    if on_step and rank == 0 and start == 0:
        on_step(0, model.backbone())
    for step in range(start, end):
        images = next(batches).to(device, non_blocking=True)
        values = step_values(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = values["lr"]
            group["weight_decay"] = values["weight_decay"] if group["apply_wd"] else 0.0
        generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, rank, 0))
        torch.manual_seed(step_seed(cfg.seed, step, rank, 1))  # drop-path and anything else on the global RNG
        batch = model.recipe.prepare(cfg, multicrop, images, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, logs = net(batch, values)
        losses[step - start] = loss.detach()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss.item()} ({_format_logs(logs)})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        model.update_teacher(values["momentum"])
        done = step + 1
        if on_step and rank == 0:
            on_step(done, model.backbone())
        if rank == 0 and (done % cfg.log_every == 0 or done == end):
            rate = (done - start) / (time.time() - t0)
            log(f"step {done}/{cfg.steps} loss {loss.item():.4f} {_format_logs(logs)} lr {values['lr']:.2e} "
                f"{rate * cfg.batch_size * world:.0f} img/s eta {(end - done) / rate / 60:.1f} min")
        if rank == 0 and (done % cfg.ckpt_every == 0 or done == end):
            save_training_checkpoint(ckpt_path, model, optimizer, done, cfg.to_json())
    done = max(start, end)
    backbone = None
    if done >= cfg.steps and rank == 0:
        backbone = save_backbone(out / f"{name}.safetensors", model.backbone(),
                                 backbone_config(cfg, done, dataset.identity))
        log(f"wrote {backbone} ({(time.time() - t0) / 60:.1f} min)")
    if world > 1:
        dist.barrier()
    return {"step": done, "checkpoint": ckpt_path, "backbone": backbone, "model": model, "losses": losses.tolist()}

"""Self-supervised pre-training of ViTs: DINO, iBOT, MSN, MAE and MaskCluster as recipes over shared parts.

    from lowshot.model_zoo.pretrain import make_config, train
    train(make_config("maskcluster", steps=1000), "runs/mc")    # -> runs/mc/backbone.safetensors

Modules: config (the one config dataclass), backbone (timm ViT run token-wise), masking, augment (multi-crop),
heads, collapse (centering, Sinkhorn-Knopp, ME-MAX), losses, recipes (the five methods), model (student + EMA
teacher), schedules, data, checkpoint (training checkpoint + lowshot .safetensors), train (loop, DDP),
cli (add_pretrain_arguments / config_from_args). The shipped tiny models: benchmark/tiny_models.py.
"""
from .cli import TINY, add_pretrain_arguments, config_from_args
from .config import PretrainConfig
from .recipes import RECIPES, make_config
from .train import train

__all__ = ["TINY", "add_pretrain_arguments", "config_from_args", "PretrainConfig", "RECIPES",
           "make_config", "train"]

"""Student, EMA teacher, heads and centres of one recipe, as one module (so DDP wraps a single forward)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .backbone import build_vit, encode
from .config import PretrainConfig
from .recipes import RECIPES
from .schedules import ema_update


class PretrainModel(nn.Module):
    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.cfg = cfg
        self.recipe = RECIPES[cfg.method]
        self.student = build_vit(cfg)
        self.heads = nn.ModuleDict(self.recipe.heads(cfg))
        self.centers = nn.ModuleDict(self.recipe.centers(cfg))
        if self.recipe.needs_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        else:
            self.mask_token = None
        self.teacher, self.teacher_heads = None, nn.ModuleDict()
        if self.recipe.uses_teacher:  # the teacher starts as a copy of the student and only follows it by EMA
            self.teacher = copy.deepcopy(self.student).requires_grad_(False)
            self.teacher_heads = nn.ModuleDict({k: copy.deepcopy(self.heads[k]).requires_grad_(False)
                                                for k in self.recipe.teacher_head_names(cfg)})

    encode = staticmethod(encode)

    def forward(self, batch: dict, temps: dict) -> tuple[torch.Tensor, dict]:
        return self.recipe.loss(self, batch, temps)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        if self.teacher is None:
            return
        ema_update(self.teacher, self.student, momentum)
        for name, head in self.teacher_heads.items():
            ema_update(head, self.heads[name], momentum)

    def backbone(self) -> nn.Module:
        """The encoder the evaluation uses: the EMA teacher (target encoder), or MAE's encoder."""
        return self.teacher if self.teacher is not None else self.student

    def parameter_groups(self) -> list[dict]:
        """AdamW groups: no weight decay on biases, norms, tokens, position embeddings (DINO / MAE)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "mask_token")) else decay).append(p)
        return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]

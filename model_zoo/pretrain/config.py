"""Pre-training configuration: one flat dataclass, JSON-serialisable, stored in every checkpoint.

Each recipe (`recipes.py`) overrides the generic defaults below with its method's own; the command line
overrides both. Defaults are sized for the tiny models (64 px images, patch 8) and follow the papers where
a tiny scale allows: temperatures (student 0.1, teacher 0.04 → 0.07 for DINO/iBOT, 0.025 for MSN targets),
EMA momentum 0.996 → 1 on a cosine, AdamW with warm-up and cosine decay, weight decay 0.04 → 0.4.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

COLLAPSE_CHOICES = ("centering", "sinkhorn", "memax")
CORRUPTIONS = ("mask_token", "noise", "other_image", "noise+other_image", "drop")


@dataclass
class PretrainConfig:
    method: str = "maskcluster"
    # backbone (timm VisionTransformer)
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    patch_size: int = 8
    img_size: int = 64
    drop_path: float = 0.0
    # data and multi-crop views (scales are fractions of the image area)
    data: str = "embedded"
    embedded_task: str = "classification"  # which train pool of the embedded dataset (labels are never read)
    max_images: int = 0  # 0: all images
    load_size: int = 0  # images are resized + center-cropped to this square first (0: img_size)
    n_global: int = 2
    n_local: int = 0
    local_size: int = 32
    global_scale: tuple = (0.4, 1.0)
    local_scale: tuple = (0.1, 0.4)
    jitter: float = 0.4  # colour-jitter strength (brightness, contrast, saturation), applied with p=0.8
    grayscale_p: float = 0.2
    solarize_p: float = 0.0  # on the second global view (BYOL / DINO)
    channel_shuffle_p: float = 0.0  # random RGB channel order (coarse hue jitter)
    # clustering heads: projection MLP + prototypes (cosine logits)
    num_prototypes: int = 512
    patch_prototypes: int = 256
    head_hidden: int = 256  # small: patch heads run on every token, at tiny scale they would cost more than the ViT
    head_bottleneck: int = 64
    head_layers: int = 3
    shared_head: bool = False  # one head for CLS and patch tokens (iBOT's shared_head)
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    teacher_temp_start: float = 0.04  # linear warm-up start, over teacher_temp_warmup steps
    teacher_temp_warmup: int = 0
    # collapse avoidance, any subset of COLLAPSE_CHOICES
    collapse: tuple = ("centering",)
    center_momentum: float = 0.9
    sinkhorn_iters: int = 3
    memax_weight: float = 1.0
    # masking
    mask_ratio: float = 0.3
    mask_mode: str = "block"  # block (BEiT/GMML blocks) or random (MAE/MSN)
    corruption: str = "mask_token"  # one of CORRUPTIONS
    # loss weights
    w_cls: float = 1.0
    w_patch: float = 1.0
    w_rec: float = 0.0
    # MAE decoder
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    # optimisation (steps counted in optimizer steps; batch_size is per process)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_steps: int = 50
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    momentum_teacher: float = 0.996
    # run
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 100
    num_workers: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.global_scale, self.local_scale = tuple(self.global_scale), tuple(self.local_scale)
        self.collapse = tuple(self.collapse)
        unknown = set(self.collapse) - set(COLLAPSE_CHOICES)
        if unknown:
            raise ValueError(f"unknown collapse avoidance {sorted(unknown)}; choose from {COLLAPSE_CHOICES}")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {self.corruption!r}")
        if self.img_size % self.patch_size or self.local_size % self.patch_size:
            raise ValueError("img_size and local_size must be multiples of patch_size")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide embed_dim={self.embed_dim}")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown pretraining config keys {sorted(unknown)}")
        return cls(**d)

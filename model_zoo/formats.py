"""One small filter per release layout: checkpoint object -> timm `VisionTransformer` backbone state dict.

Each layout says where the encoder lives (which top-level key, for the teacher and the student), which
prefixes to strip, and which non-backbone keys it is known to carry (dropped). Anything else left over is
an error: a file that does not fit is refused, never half-loaded.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import torch

from .safe_load import CheckpointError

BACKBONE = re.compile(r"^(cls_token|pos_embed|register_tokens|storage_tokens|rope_embed\.periods|patch_embed\.|"
                      r"blocks\.\d+\.|norm\.)")


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    container: str | None = None  # top-level key holding the state dict (None: the file is the state dict)
    teacher_key: str | None = None  # full checkpoints: key of the encoder the official evaluation uses
    student_key: str | None = None  # ... and of the student / online encoder
    prefixes: tuple[str, ...] = ()  # stripped in order, each when present
    drop: str = r"$^"  # regex of known non-backbone keys (after prefix stripping)
    methods: tuple[str, ...] = ()  # whose release files use this layout (empty: the file says, e.g. lowshot)

    def state_dict(self, ckpt, weights: str = "teacher") -> dict:
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"layout {self.name}: expected a dict, got {type(ckpt).__name__}")
        if weights not in ("teacher", "student"):
            raise ValueError(f"weights must be 'teacher' or 'student', got {weights!r}")
        key = self.teacher_key if weights == "teacher" else self.student_key
        if weights == "student" and key is None:
            raise ValueError(f"layout {self.name} ({self.description}) holds one encoder only; "
                             "weights='student' needs a full training checkpoint")
        key = key or self.container
        sd = ckpt if key is None else ckpt.get(key)
        if not isinstance(sd, dict):
            raise CheckpointError(f"layout {self.name}: top-level key {key!r} missing or not a state dict "
                                  f"(top-level keys: {sorted(map(str, ckpt))[:12]})")
        out, unknown = {}, []
        for k, v in sd.items():
            for p in self.prefixes:
                k = k[len(p):] if k.startswith(p) else k
            if BACKBONE.match(k):
                out[k] = v
            elif not re.match(self.drop, k):
                unknown.append(k)
        if unknown:
            raise CheckpointError(f"layout {self.name}: unexpected non-backbone keys {unknown[:10]}"
                                  f"{' ...' if len(unknown) > 10 else ''}; wrong layout? pass --layout "
                                  f"(Python: layout=), one of {', '.join(sorted(LAYOUTS))}")
        if not out:
            raise CheckpointError(f"layout {self.name}: no backbone keys found under {key!r}")
        return out


_HEAD = r"head\."
_DINO, _IBOT = ("dino",), ("ibot", "maskcluster")  # MaskCluster's published code is iBOT's
LAYOUTS: dict[str, Layout] = {l.name: l for l in [
    Layout("dino_backbone", "DINO *_pretrain.pth: flat teacher backbone state dict", methods=_DINO),
    Layout("dino_full", "DINO *_full_checkpoint.pth: student/teacher with DINOHead", None, "teacher", "student",
           ("module.", "backbone."), _HEAD, _DINO),
    Layout("ibot_teacher", "iBOT checkpoint_teacher.pth: {'state_dict': backbone}", "state_dict", methods=_IBOT),
    Layout("ibot_teacher_with_head", "iBOT checkpoint_teacher.pth extracted --with_head true", "state_dict",
           drop=_HEAD, methods=_IBOT),
    Layout("ibot_full", "iBOT checkpoint.pth: student/teacher, iBOTHead, masked_embed", None, "teacher",
           "student", ("module.", "backbone."), r"(head\.|masked_embed$)", _IBOT),
    Layout("mae_encoder", "MAE mae_pretrain_vit_*.pth: {'model': encoder}", "model", methods=("mae",)),
    Layout("mae_full", "MAE *_full.pth: {'model': encoder + decoder}", "model",
           drop=r"(mask_token$|decoder_)", methods=("mae",)),
    Layout("msn", "MSN *.pth.tar: target_encoder/encoder with projection head fc", None, "target_encoder",
           "encoder", ("module.",), r"fc\.", ("msn",)),
    Layout("lowshot", "lowshot-bench .safetensors: backbone (teacher) + config metadata", "state_dict"),
    Layout("dinov2", "DINOv2 dinov2_vit*14[_reg4]_pretrain.pth: flat backbone, layer scale, optional registers",
           drop=r"mask_token$", methods=("dinov2",)),
    # 7B and SAT-493M files carry local_cls_norm, used only for local crops in training
    Layout("dinov3", "DINOv3 dinov3_vit*16*_pretrain_*.pth: flat backbone, RoPE periods, storage tokens",
           drop=r"(mask_token$|local_cls_norm\.)", methods=("dinov3",)),
]}


def detect_layout(ckpt) -> str:
    """Name of the layout of an unknown checkpoint object; CheckpointError when nothing fits."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"cannot detect the layout of a {type(ckpt).__name__}; expected a dict")
    keys = set(map(str, ckpt))
    if "metadata" in keys and ckpt.get("metadata", {}).get("format", "").startswith("lowshot"):
        return "lowshot"
    if {"target_encoder", "encoder"} <= keys:
        return "msn"
    if {"teacher", "student"} <= keys:
        student = ckpt["student"] if isinstance(ckpt["student"], dict) else {}
        if "ibot_loss" in keys or any(k.endswith("masked_embed") for k in student):
            return "ibot_full"
        return "dino_full"
    if "state_dict" in keys and isinstance(ckpt["state_dict"], dict):
        return "ibot_teacher_with_head" if any(k.startswith("head.") for k in ckpt["state_dict"]) else "ibot_teacher"
    if "model" in keys and isinstance(ckpt["model"], dict):
        return "mae_full" if any(k.startswith("decoder_") for k in ckpt["model"]) else "mae_encoder"
    if "cls_token" in keys and any(k.startswith("blocks.") for k in keys):
        if "storage_tokens" in keys or "rope_embed.periods" in keys:
            return "dinov3"
        if "register_tokens" in keys or any(k.endswith(".ls1.gamma") for k in keys):
            return "dinov2"
        return "dino_backbone"
    raise CheckpointError(f"unrecognised checkpoint layout (top-level keys: {sorted(keys)[:12]}); "
                          f"pass --layout (Python: layout=), one of {', '.join(sorted(LAYOUTS))}")


@dataclass(frozen=True)
class Architecture:
    embed_dim: int
    depth: int
    patch_size: int
    grid: int  # pos-embed grid side of the checkpoint (img_size = grid * patch_size); 0: no learned pos_embed
    mlp_ratio: float  # first MLP layer's width / embed_dim (SwiGLU: the width of one of its two halves)
    qkv_bias: bool
    num_registers: int = 0  # DINOv2 register / DINOv3 storage tokens
    layer_scale: bool = False
    ffn: str = "mlp"  # "mlp" (fc1 -> GELU -> fc2), "swiglu_packed" (DINOv2 w12 / w3), "swiglu" (DINOv3 w1, w2 / w3)
    position: str = "learned"  # "learned" pos_embed or "rope" (DINOv3)

    @property
    def img_size(self) -> int:
        return self.grid * self.patch_size


def _mlp_width(sd: dict) -> tuple[str, int]:
    """The FFN kind and the width most blocks agree on (a mis-shaped tensor is then reported as itself)."""
    kinds = {"mlp": ".mlp.fc1.weight", "swiglu_packed": ".mlp.w12.weight", "swiglu": ".mlp.w1.weight"}
    for kind, suffix in kinds.items():
        widths = Counter(v.shape[0] for k, v in sd.items() if k.endswith(suffix))
        if widths:
            width = widths.most_common(1)[0][0]
            return kind, width // 2 if kind == "swiglu_packed" else width
    raise KeyError("blocks.0.mlp.fc1.weight")


def infer_architecture(sd: dict) -> Architecture:
    """Everything but num_heads follows from the shapes."""
    try:
        embed_dim = sd["cls_token"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        patch_size = sd["patch_embed.proj.weight"].shape[-1]
        rope = "rope_embed.periods" in sd
        n_patches = 0 if rope else sd["pos_embed"].shape[1] - 1
        ffn, hidden = _mlp_width(sd)
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot infer the architecture: missing backbone key {e}") from None
    grid = math.isqrt(n_patches)
    if grid * grid != n_patches:
        raise CheckpointError(f"pos_embed has {n_patches} patch positions, not a square grid")
    extra = sd.get("register_tokens", sd.get("storage_tokens"))
    return Architecture(embed_dim, depth, patch_size, grid, hidden / embed_dim, "blocks.0.attn.qkv.bias" in sd,
                        num_registers=0 if extra is None else extra.shape[1],
                        layer_scale="blocks.0.ls1.gamma" in sd, ffn=ffn, position="rope" if rope else "learned")


def check_fits(model: torch.nn.Module, sd: dict, source: str) -> None:
    """Raise CheckpointError before a strict load, in one line: the counts of missing / unexpected keys with their
    first names, and of mis-shaped tensors with the first of them (one wrong width mis-shapes every tensor)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]  # model order: blocks.2 before blocks.10
    unexpected = [k for k in sd if k not in expected]
    misshaped = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in sd and sd[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        parts = [f"{name} ({len(v)}): {v[:shown]}{' ...' if len(v) > shown else ''}"
                 for name, v, shown in (("missing", missing, 5), ("unexpected", unexpected, 5),
                                        ("mis-shaped", misshaped, 1)) if v]
        raise CheckpointError(f"{source} does not fit the architecture; " + "; ".join(parts))

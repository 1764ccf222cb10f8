"""Token backbones: how a model turns images into token sequences, one class per kind of model.

Every backbone gives `FeatureExtractor` the same three things, and every feature is built from them alone:
  block_outputs(x, keep_last)  token sequences [B, P + N, D] after each of the last `keep_last` blocks, before
                               the final norm (P prefix tokens: the CLS token first when there is one, then
                               registers / storage tokens; N patch tokens, row-major over the patch grid)
  norm(tokens)                 the model's final norm
  pooled(last_normed)          the model's own pooled output where it has one (global-pool timm models)
and its shape: `num_prefix_tokens`, `has_class_token`, `patch_size` (None: the model checks sizes itself),
`embed_dim`, `depth`.

- `ViTBackbone`: a timm `VisionTransformer` run by a method's own position-embedding rule (DINO, iBOT, MAE, MSN,
  this project's models, DINOv2 with its registers inserted after the position embedding).
- `RopeViTBackbone`: a timm `Eva` with DINOv3's RoPE (the periods stored in the release file).
- `TimmBackbone`: any timm model with `forward_intermediates`, run exactly as timm runs it.
"""
from __future__ import annotations

import torch

from .errors import BadInputError
from .pos_embed import resize_pos_embed


class Backbone(torch.nn.Module):
    num_prefix_tokens: int = 1
    has_class_token: bool = True
    patch_size: int | None = None
    embed_dim: int = 0
    depth: int = 0

    def block_outputs(self, x: torch.Tensor, keep_last: int) -> list[torch.Tensor]:
        raise NotImplementedError

    def norm(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pooled(self, last_normed: torch.Tensor) -> torch.Tensor | None:
        return None

    @property
    def own_feature(self) -> str:
        """The feature the model itself gives as its image representation: its CLS token, else its pooled output."""
        return "cls" if self.has_class_token else "pooled"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_size(self, h: int, w: int) -> None:
        p = self.patch_size
        if p and (h % p or w % p):
            raise BadInputError(f"input size {h}x{w} is not divisible by the patch size {p}: use a protocol whose "
                                "crop is a multiple of it (the embedded tasks crop 64 px; ImageNet 224 = 16 x 14)")


class ViTBackbone(Backbone):
    """timm VisionTransformer blocks; patch embedding, CLS, position rule and registers done here as the method's
    own code does them (timm's default antialiased resize matches none of DINO, iBOT, MAE, MSN, DINOv2)."""

    def __init__(self, vit, pos_embed_rule: str, registers: torch.Tensor | None = None):
        super().__init__()
        self.vit = vit
        self.vit.patch_embed.strict_img_size = False  # sizes are checked here, pos embeds resized by the rule
        self.pos_embed_rule = pos_embed_rule
        # DINOv2 registers: inserted after the position embedding is added, so they get none
        self.register_tokens = None if registers is None else torch.nn.Parameter(registers, requires_grad=False)
        self.num_prefix_tokens = 1 + (0 if registers is None else registers.shape[1])
        self.patch_size = vit.patch_embed.patch_size[0]
        self.embed_dim = vit.embed_dim
        self.depth = len(vit.blocks)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def _pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        # The rule is deterministic: computed once per grid and version of the weights (a model that trains between
        # two evaluations has its position embedding changed in place, which bumps the tensor's version).
        key = (grid_h, grid_w, self.vit.pos_embed.device, self.vit.pos_embed._version)
        if key not in self._pos_cache:
            self._pos_cache[key] = resize_pos_embed(self.vit.pos_embed, grid_h, grid_w, self.pos_embed_rule)
        return self._pos_cache[key]

    def block_outputs(self, x, keep_last):
        b, _, h, w = x.shape
        self.check_size(h, w)
        vit, p = self.vit, self.patch_size
        tokens = vit.patch_embed(x)
        tokens = torch.cat([vit.cls_token.expand(b, -1, -1), tokens], dim=1) + self._pos_embed(h // p, w // p)
        if self.register_tokens is not None:
            tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(b, -1, -1), tokens[:, 1:]], dim=1)
        return _run_blocks(vit.blocks, tokens, keep_last)

    def norm(self, tokens):
        return self.vit.norm(tokens)


class RopeViTBackbone(Backbone):
    """DINOv3: timm's Eva with RoPE, q/v bias (the K bias is masked off in the release), layer scale, eps 1e-5."""

    def __init__(self, eva):
        super().__init__()
        self.eva = eva
        self.num_prefix_tokens = eva.num_prefix_tokens
        self.patch_size = eva.patch_embed.patch_size[0]
        self.embed_dim = eva.embed_dim
        self.depth = len(eva.blocks)

    def block_outputs(self, x, keep_last):
        b, _, h, w = x.shape
        self.check_size(h, w)
        eva, p = self.eva, self.patch_size
        patches = eva.patch_embed(x).reshape(b, (h // p) * (w // p), -1)  # dynamic_img_size: NHWC, row-major
        tokens = torch.cat([eva.cls_token.expand(b, -1, -1), eva.reg_token.expand(b, -1, -1), patches], dim=1)
        rope = eva.rope.get_embed(shape=(h // p, w // p))
        return _run_blocks(eva.blocks, tokens, keep_last, rope=rope)

    def norm(self, tokens):
        return self.eva.norm(tokens)


class TimmBackbone(Backbone):
    """Any timm model with `forward_intermediates` (ViT, Eva, DeiT, ...), run as timm runs it: its own position
    rule, prefix tokens and pooling."""

    def __init__(self, model):
        super().__init__()
        if not hasattr(model, "forward_intermediates"):
            raise TypeError(f"timm model {type(model).__name__} has no forward_intermediates (not a token model)")
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.has_class_token = bool(getattr(model, "has_class_token", getattr(model, "cls_token", None) is not None))
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        self.patch_size = patch[0] if isinstance(patch, (tuple, list)) else patch
        self.embed_dim = int(getattr(model, "embed_dim", getattr(model, "num_features", 0)))
        self.depth = len(model.blocks)
        self.global_pool = str(getattr(model, "global_pool", "token") or "token")

    @property
    def own_feature(self) -> str:
        """As timm's own head pools: the CLS token for global_pool 'token', else its pooled output (average,
        attention pooling...; such models often have no final norm on the CLS token, only on the pooled output)."""
        return "cls" if self.has_class_token and self.global_pool == "token" else "pooled"

    def block_outputs(self, x, keep_last):
        self.check_size(*x.shape[-2:])
        outs = self.model.forward_intermediates(x, indices=keep_last, norm=False, output_fmt="NLC",
                                                intermediates_only=True, return_prefix_tokens=True)
        if self.num_prefix_tokens:
            return [torch.cat([prefix, patches], dim=1) for patches, prefix in outs]
        return list(outs)

    def norm(self, tokens):
        return self.model.norm(tokens)

    def pooled(self, last_normed):
        return self.model.forward_head(last_normed, pre_logits=True)


def _run_blocks(blocks, tokens: torch.Tensor, keep_last: int, **kwargs) -> list[torch.Tensor]:
    outs, depth = [], len(blocks)
    for i, block in enumerate(blocks):
        tokens = block(tokens, **kwargs)
        if i >= depth - keep_last:
            outs.append(tokens)
    return outs

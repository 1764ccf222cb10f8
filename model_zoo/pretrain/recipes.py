"""The five pre-training methods as recipes over the same parts.

A recipe names its heads (which also get an EMA teacher copy), its centres, its default hyper-parameters,
how a batch of images becomes views + masks (`prepare`, all randomness from one generator) and its loss.

  dino         CLS self-distillation across multi-crop views, teacher centred (Caron et al. 2021)
  ibot         + masked patch self-distillation: student global views with block-masked mask tokens (Zhou et al. 2022)
  msn          masked anchor views (patches dropped) match the unmasked target view's prototype assignment;
               targets sharpened + Sinkhorn, ME-MAX on the anchors; prototypes shared with the target
               (Assran et al. 2022)
  mae          75 % of patches dropped, a light decoder reconstructs their normalised pixels; no teacher
               (He et al. 2022)
  maskcluster  teacher CL_t / PL_t cluster the unmasked views' CLS / patch tokens; the student sees GMML-corrupted
               views (blocks of noise or of another image) and predicts both assignments (CL_s / PL_s) and
               reconstructs the clean pixels (l1) of the corrupted patches (Nandam et al., Figure 2)

Symmetrised like DINO: with two global views every student view predicts the other view's teacher targets.
"""
from __future__ import annotations

import torch

from .augment import MultiCrop
from .collapse import Centering, me_max, teacher_targets
from .config import PretrainConfig
from .heads import ClusteringHead, MAEDecoder, PixelHead
from .losses import cross_view_distillation, masked_l1, masked_mse, masked_patch_distillation, pixel_targets
from .masking import block_mask, corrupt, random_mask


def _head(cfg: PretrainConfig, prototypes: int) -> ClusteringHead:
    return ClusteringHead(cfg.embed_dim, prototypes, cfg.head_hidden, cfg.head_bottleneck, cfg.head_layers)


class Recipe:
    name = ""
    defaults: dict = {}
    uses_teacher = True
    needs_mask_token = False

    def heads(self, cfg: PretrainConfig) -> dict:
        return {"cls": _head(cfg, cfg.num_prototypes)}

    def teacher_head_names(self, cfg: PretrainConfig) -> tuple:
        return ("cls",)

    def centers(self, cfg: PretrainConfig) -> dict:
        return {"cls": Centering(cfg.num_prototypes, cfg.center_momentum)} if "centering" in cfg.collapse else {}

    def masks(self, cfg: PretrainConfig, batch: int, grid: int, g: torch.Generator) -> torch.Tensor:
        if cfg.mask_mode == "random":
            return random_mask(batch, grid * grid, cfg.mask_ratio, g)[0]
        return block_mask(batch, grid, grid, cfg.mask_ratio, g)

    def prepare(self, cfg: PretrainConfig, multicrop: MultiCrop, images: torch.Tensor, g: torch.Generator) -> dict:
        globals_, locals_ = multicrop(images, g)
        return {"globals": torch.cat(globals_), "locals": torch.cat(locals_) if locals_ else None}

    def loss(self, model, batch: dict, temps: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    # --- shared steps
    @torch.no_grad()
    def teacher_tokens(self, model, views: torch.Tensor) -> torch.Tensor:
        return model.encode(model.teacher, views)

    def teacher_probs(self, model, logits: torch.Tensor, temps: dict, name: str = "cls") -> torch.Tensor:
        cfg = model.cfg
        probs = teacher_targets(logits, temps["teacher_temp"], cfg.collapse, model.centers[name] if name in
                                model.centers else None, cfg.sinkhorn_iters)
        if name in model.centers:
            model.centers[name].update(logits)
        return probs

    def regulariser(self, model, student_logits: list[torch.Tensor]) -> torch.Tensor:
        cfg = model.cfg
        if "memax" not in cfg.collapse:
            return torch.zeros((), device=student_logits[0].device)
        return cfg.memax_weight * sum(me_max(torch.softmax(s.float() / cfg.student_temp, -1)) for s in student_logits)


class DINO(Recipe):
    name = "dino"
    defaults = dict(n_global=2, n_local=4, collapse=("centering",), solarize_p=0.2, mask_ratio=0.0)

    def loss(self, model, batch, temps):
        cfg, n = model.cfg, model.cfg.n_global
        t_logits = model.teacher_heads["cls"](self.teacher_tokens(model, batch["globals"])[:, 0])
        targets = self.teacher_probs(model, t_logits, temps).chunk(n)
        s_logits = list(model.heads["cls"](model.encode(model.student, batch["globals"])[:, 0]).chunk(n))
        if batch["locals"] is not None:
            s_logits += list(model.heads["cls"](model.encode(model.student, batch["locals"])[:, 0]).chunk(cfg.n_local))
        cls = cross_view_distillation(list(targets), s_logits, cfg.student_temp)
        reg = self.regulariser(model, s_logits)
        return cfg.w_cls * cls + reg, {"cls": cls, "reg": reg}


class IBOT(Recipe):
    name = "ibot"
    needs_mask_token = True
    defaults = dict(n_global=2, n_local=4, collapse=("centering",), solarize_p=0.2, mask_ratio=0.3,
                    mask_mode="block", corruption="mask_token", shared_head=True)

    def heads(self, cfg):
        if cfg.shared_head:
            return {"cls": _head(cfg, cfg.num_prototypes)}
        return {"cls": _head(cfg, cfg.num_prototypes), "patch": _head(cfg, cfg.patch_prototypes)}

    def teacher_head_names(self, cfg):
        return ("cls",) if cfg.shared_head else ("cls", "patch")

    def centers(self, cfg):
        if "centering" not in cfg.collapse:
            return {}
        k = cfg.num_prototypes if cfg.shared_head else cfg.patch_prototypes
        return {"cls": Centering(cfg.num_prototypes, cfg.center_momentum), "patch": Centering(k, cfg.center_momentum)}

    def prepare(self, cfg, multicrop, images, g):
        batch = super().prepare(cfg, multicrop, images, g)
        views = batch["globals"]
        batch["mask"] = self.masks(cfg, views.shape[0], cfg.img_size // cfg.patch_size, g).to(views.device)
        return batch

    def student_views(self, model, batch) -> torch.Tensor:
        return model.encode(model.student, batch["globals"], token_mask=batch["mask"], mask_token=model.mask_token)

    def loss(self, model, batch, temps, skip_same_view=True):
        cfg, n = model.cfg, model.cfg.n_global
        patch_name = "cls" if "patch" not in model.heads else "patch"
        t_tokens = self.teacher_tokens(model, batch["globals"])
        t_cls = self.teacher_probs(model, model.teacher_heads["cls"](t_tokens[:, 0]), temps, "cls")
        t_patch = self.teacher_probs(model, model.teacher_heads[patch_name](t_tokens[:, 1:]), temps, "patch")
        s_tokens = self.student_views(model, batch)
        s_cls = list(model.heads["cls"](s_tokens[:, 0]).chunk(n))
        s_patch = model.heads[patch_name](s_tokens[:, 1:])
        if batch["locals"] is not None:
            s_cls += list(model.heads["cls"](model.encode(model.student, batch["locals"])[:, 0]).chunk(cfg.n_local))
        cls = cross_view_distillation(list(t_cls.chunk(n)), s_cls, cfg.student_temp, skip_same_view)
        patch = masked_patch_distillation(t_patch, s_patch, batch["mask"], cfg.student_temp)
        reg = self.regulariser(model, s_cls + [s_patch])
        logs = {"cls": cls, "patch": patch, "reg": reg}
        loss = cfg.w_cls * cls + cfg.w_patch * patch + reg
        if cfg.w_rec:
            rec = masked_l1(model.heads["pixels"](s_tokens[:, 1:]), batch["pixels"], batch["mask"])
            loss, logs["rec"] = loss + cfg.w_rec * rec, rec
        return loss, logs


class MaskCluster(IBOT):
    name = "maskcluster"
    needs_mask_token = False
    defaults = dict(n_global=2, n_local=0, collapse=("centering", "memax"), memax_weight=0.5, mask_ratio=0.4,
                    mask_mode="block", corruption="noise+other_image", shared_head=False, w_rec=1.0,
                    solarize_p=0.2)

    def heads(self, cfg):
        return {**super().heads(cfg), "pixels": PixelHead(cfg.embed_dim, cfg.patch_size)}

    def prepare(self, cfg, multicrop, images, g):
        batch = super().prepare(cfg, multicrop, images, g)
        clean = batch["globals"]
        batch["corrupted"] = corrupt(clean, batch["mask"], cfg.patch_size, cfg.corruption, g)
        batch["pixels"] = pixel_targets(clean, cfg.patch_size, normalise=False)  # the original view's pixels
        return batch

    def student_views(self, model, batch):
        return model.encode(model.student, batch["corrupted"])

    def loss(self, model, batch, temps):  # the student's view is corrupted: its own view's targets count too
        return super().loss(model, batch, temps, skip_same_view=False)


class MSN(Recipe):
    name = "msn"
    defaults = dict(n_global=2, n_local=4, collapse=("sinkhorn", "memax"), memax_weight=1.0, teacher_temp=0.025,
                    teacher_temp_start=0.025, student_temp=0.1, mask_ratio=0.3, mask_mode="random",
                    corruption="drop", momentum_teacher=0.996)

    def prepare(self, cfg, multicrop, images, g):
        batch = super().prepare(cfg, multicrop, images, g)
        for key, size in (("globals", cfg.img_size), ("locals", cfg.local_size)):
            if batch[key] is not None:
                batch[f"{key}_keep"] = random_mask(batch[key].shape[0], (size // cfg.patch_size) ** 2,
                                                   cfg.mask_ratio, g)[1].to(batch[key].device)
        return batch

    def anchors(self, model, views, keep):
        return model.heads["cls"](model.encode(model.student, views, keep=keep)[:, 0])

    def loss(self, model, batch, temps):
        cfg, n = model.cfg, model.cfg.n_global
        with torch.no_grad():  # target encoder + EMA projection, the student's prototypes (shared, as MSN)
            z = model.teacher_heads["cls"].project(self.teacher_tokens(model, batch["globals"])[:, 0])
            t_logits = model.heads["cls"].assign(z, model.heads["cls"].prototypes.detach())
        targets = self.teacher_probs(model, t_logits, temps)
        s_logits = list(self.anchors(model, batch["globals"], batch["globals_keep"]).chunk(n))
        if batch["locals"] is not None:
            s_logits += list(self.anchors(model, batch["locals"], batch["locals_keep"]).chunk(cfg.n_local))
        cls = cross_view_distillation(list(targets.chunk(n)), s_logits, cfg.student_temp)
        reg = self.regulariser(model, [torch.cat(s_logits)])
        return cfg.w_cls * cls + reg, {"cls": cls, "reg": reg}


class MAE(Recipe):
    name = "mae"
    uses_teacher = False
    defaults = dict(n_global=1, n_local=0, global_scale=(0.2, 1.0), jitter=0.0, grayscale_p=0.0, mask_ratio=0.75,
                    mask_mode="random", corruption="drop", collapse=(), weight_decay=0.05, weight_decay_end=0.05,
                    lr=1e-3)

    def heads(self, cfg):
        grid = cfg.img_size // cfg.patch_size
        return {"decoder": MAEDecoder(cfg.embed_dim, grid * grid, cfg.patch_size, cfg.decoder_dim, cfg.decoder_depth,
                                      cfg.decoder_heads)}

    def teacher_head_names(self, cfg):
        return ()

    def centers(self, cfg):
        return {}

    def prepare(self, cfg, multicrop, images, g):
        views = super().prepare(cfg, multicrop, images, g)["globals"]
        n = (cfg.img_size // cfg.patch_size) ** 2
        mask, keep = random_mask(views.shape[0], n, cfg.mask_ratio, g)
        return {"views": views, "mask": mask.to(views.device), "keep": keep.to(views.device)}

    def loss(self, model, batch, temps):
        cfg = model.cfg
        tokens = model.encode(model.student, batch["views"], keep=batch["keep"])
        pred = model.heads["decoder"](tokens, batch["keep"], batch["mask"].shape[1])
        rec = masked_mse(pred, pixel_targets(batch["views"], cfg.patch_size, cfg.norm_pix_loss), batch["mask"])
        return rec, {"rec": rec}


RECIPES: dict[str, Recipe] = {r.name: r for r in (DINO(), IBOT(), MSN(), MAE(), MaskCluster())}


def make_config(method: str, **overrides) -> PretrainConfig:
    """The method's config: generic defaults < recipe defaults < overrides."""
    if method not in RECIPES:
        raise ValueError(f"unknown method {method!r}; known: {sorted(RECIPES)}")
    return PretrainConfig(**{**RECIPES[method].defaults, **overrides, "method": method})

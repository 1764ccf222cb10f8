"""What a model *is*: one entry per public release, plus each method's own evaluation config.

An evaluation config (`EvalConfig`, like timm's `pretrained_cfg`) says how a method's own evaluation code runs
its model: normalisation, resize interpolation, which feature each protocol reads, the position-embedding rule
and the linear-eval pooling. It belongs to the *method* (`METHODS`); an entry names its method and may override
single fields (`ModelEntry.eval_overrides`). Tasks state only their protocol's sizes (e.g. 256 / 224); the
transform is built from the config (`model_zoo.transforms`). Sources for each rule are given inline;
`../shared/fixtures/official_checkpoints/README.md` measured them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UnknownNameError

# The features of the interface (model_zoo/extractor.py says what each one is).
FEATURES = ("cls", "patch", "registers", "cls_last4", "patch_last4", "cls_prenorm", "cls_avgpool",
            "cls_last4_avgpool", "linear_avgpool", "pooled")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EvalConfig:
    method: str
    # Feature the low-shot logistic-regression protocols use (a key of FeatureExtractor.extract).
    lowshot_feature: str
    # How position embeddings follow the input size (see model_zoo/pos_embed.py).
    pos_embed_rule: str
    # Interpolation of the evaluation resize (shorter side -> 256) in the method's own eval code.
    interpolation: str
    # How the method's own linear-eval pooled feature is built, or None when it has none.
    linear_pool: str | None
    # Which stored encoder the official evaluation reads from a full checkpoint.
    eval_weights: str = "teacher"
    # Feature of the weighted k-NN: DINO's eval_knn.py runs it on the model's output, the final-norm CLS.
    knn_feature: str = "cls"
    # Normalisation of the evaluation images.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


METHODS: dict[str, EvalConfig] = {
    # DINO eval_knn/eval_linear: Resize(256, interpolation=3 = bicubic); k-NN on the normed CLS;
    # ViT-B linear recipe interleaves CLS and mean patch per channel.
    "dino": EvalConfig("dino", "cls", "dino", "bicubic", "interleave"),
    # iBOT: same transforms and interpolation code as DINO; its avgpool=2 recipe concatenates.
    "ibot": EvalConfig("ibot", "cls", "dino", "bicubic", "concat"),
    # MAE main_linprobe: Resize(256, BICUBIC); pos_embed resized once at load; global_pool uses a fresh fc_norm.
    "mae": EvalConfig("mae", "cls", "mae", "bicubic", "mae_fc_norm"),
    # MSN logistic_eval: transforms.Resize(256) (bilinear default); forward_blocks(x, 1) = CLS before the
    # final norm; one scale factor for the pos-embed resize; reads `target_encoder`. Its k-NN, like every
    # method's, runs on the final-norm CLS (DINO's eval_knn.py protocol), not on the logistic-regression feature.
    "msn": EvalConfig("msn", "cls_prenorm", "msn", "bilinear", None, eval_weights="target_encoder"),
    # MaskCluster (this project's pretraining, iBOT-style code): DINO rules, concatenated linear pooling.
    "maskcluster": EvalConfig("maskcluster", "cls", "dino", "bicubic", "concat"),
    # DINOv2 eval/knn.py and log_regression.py: the final-norm CLS (`model(x)`); Resize(BICUBIC) + ImageNet
    # normalisation; eval/linear.py's 1-block avgpool head reads [cls, mean of normed patch tokens] concatenated.
    # Position rule: +0.1 scale factor without registers, size-based antialiased with them (pos_embed.py).
    # Its own log-regression resizes to 224 / crops 224; this suite applies each task's protocol geometry to every
    # model (ImageNet 256 / 224), so all models are compared on the same images.
    "dinov2": EvalConfig("dinov2", "cls", "dinov2", "bicubic", "concat"),
    # DINOv3 eval/knn.py, log_regression.py: the final-norm CLS; v2.Resize(BICUBIC); default linear eval
    # n_last_blocks 1 with avgpool (concatenated). RoPE: nothing to resize.
    "dinov3": EvalConfig("dinov3", "cls", "rope", "bicubic", "concat"),
}


# The generic method: a plain timm state dict read as a named timm architecture (`--method timm --arch ARCH`), with
# that architecture's own data config and feature (model_zoo/timm_models.py) -- per architecture, so not in METHODS.
GENERIC_METHOD = "timm"


def eval_config(method: str, **overrides) -> EvalConfig:
    if method not in METHODS:
        raise UnknownNameError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    return replace(METHODS[method], **overrides)


# embed_dim, depth, num_heads. num_heads cannot be inferred from weights, so it comes from here or the caller.
ARCHS: dict[str, tuple[int, int, int]] = {
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_huge": (1280, 32, 16),
    "vit_giant2": (1536, 40, 24),  # DINOv2 ViT-g/14 (SwiGLU)
    "vit_huge_plus": (1280, 32, 20),  # DINOv3 ViT-H+/16
    "vit_7b": (4096, 40, 32),
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    method: str
    arch: str
    patch_size: int
    layout: str
    url: str | None = None
    sha256: str | None = None  # None: recorded in the cache manifest on first download
    bundled: str | None = None  # path of a checkpoint shipped inside the package (tiny models)
    release_file: str | None = None  # no URL: the file name of a release handed out after a licence form
    get_it: str = ""  # where such a release is obtained
    img_size: int = 224
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    # Block shape beyond the width (for the parameter count; the loader reads it from the file)
    ffn: str = "mlp"  # "mlp", "swiglu_packed" (DINOv2 ViT-g), "swiglu" (DINOv3 plus / 7B)
    mlp_hidden: int = 0  # 0: 4 x embed_dim (SwiGLU: the width of one half)
    qkv_bias: bool = True
    layer_scale: bool = False
    num_registers: int = 0
    rope: bool = False
    notes: str = ""
    eval_overrides: dict = field(default_factory=dict, compare=False)  # fields of EvalConfig that differ

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"{self.name}: unknown method {self.method!r}")
        if not self.embed_dim:
            dim, depth, heads = ARCHS[self.arch]
            object.__setattr__(self, "embed_dim", dim)
            object.__setattr__(self, "depth", depth)
            object.__setattr__(self, "num_heads", heads)

    @property
    def eval_config(self) -> EvalConfig:
        return eval_config(self.method, **self.eval_overrides)

    @property
    def lowshot_feature(self) -> str:
        return self.eval_config.lowshot_feature

    @property
    def file_name(self) -> str:
        if self.url:
            # Release files of different models share names (iBOT: checkpoint_teacher.pth): prefix the entry.
            return f"{self.name}--{self.url.rsplit('/', 1)[-1]}"
        if self.release_file:
            return self.release_file
        return Path(self.bundled or self.name).name

    @property
    def num_params(self) -> int:
        """Backbone parameter count computed from the architecture."""
        d, p = self.embed_dim, self.patch_size
        hidden = self.mlp_hidden or 4 * d
        ffn = {"mlp": 2 * d * hidden + hidden + d}.get(self.ffn, 3 * d * hidden + 2 * hidden + d)
        attn = 4 * d * d + (3 * d if self.qkv_bias else 0) + d
        block = attn + ffn + 4 * d + (2 * d if self.layer_scale else 0)  # two norms, two layer scales
        positions = 0 if self.rope else ((self.img_size // p) ** 2 + 1) * d
        return 3 * p * p * d + d + d + self.num_registers * d + positions + self.depth * block + 2 * d


_DINO = "https://dl.fbaipublicfiles.com/dino"
_IBOT = "https://lf3-nlp-opensource.bytetos.com/obj/nlp-opensource/archive/2022/ibot"
_MAE = "https://dl.fbaipublicfiles.com/mae/pretrain"
_MSN = "https://dl.fbaipublicfiles.com/msn"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"
_DINOV3_FORM = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"

_ENTRIES = [
    ModelEntry("dino-vits16", "dino", "vit_small", 16, "dino_backbone",
               f"{_DINO}/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"),
    ModelEntry("dino-vitb16", "dino", "vit_base", 16, "dino_backbone",
               f"{_DINO}/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"),
    ModelEntry("dino-vits8", "dino", "vit_small", 8, "dino_backbone",
               f"{_DINO}/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth"),
    ModelEntry("dino-vitb8", "dino", "vit_base", 8, "dino_backbone",
               f"{_DINO}/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"),
    ModelEntry("ibot-vits16", "ibot", "vit_small", 16, "ibot_teacher", f"{_IBOT}/vits_16/checkpoint_teacher.pth"),
    ModelEntry("ibot-vitb16", "ibot", "vit_base", 16, "ibot_teacher", f"{_IBOT}/vitb_16/checkpoint_teacher.pth"),
    ModelEntry("ibot-vitl16", "ibot", "vit_large", 16, "ibot_teacher", f"{_IBOT}/vitl_16/checkpoint_teacher.pth"),
    ModelEntry("mae-vitb16", "mae", "vit_base", 16, "mae_encoder", f"{_MAE}/mae_pretrain_vit_base.pth"),
    ModelEntry("mae-vitl16", "mae", "vit_large", 16, "mae_encoder", f"{_MAE}/mae_pretrain_vit_large.pth"),
    ModelEntry("mae-vith14", "mae", "vit_huge", 14, "mae_encoder", f"{_MAE}/mae_pretrain_vit_huge.pth"),
    ModelEntry("msn-vits16", "msn", "vit_small", 16, "msn", f"{_MSN}/vits16_800ep.pth.tar"),
    ModelEntry("msn-vitb16", "msn", "vit_base", 16, "msn", f"{_MSN}/vitb16_600ep.pth.tar"),
    ModelEntry("msn-vitl16", "msn", "vit_large", 16, "msn", f"{_MSN}/vitl16_600ep.pth.tar"),
    ModelEntry("msn-vitb4", "msn", "vit_base", 4, "msn", f"{_MSN}/vitb4_300ep.pth.tar"),
    ModelEntry("msn-vitl7", "msn", "vit_large", 7, "msn", f"{_MSN}/vitl7_200ep.pth.tar"),
    *[ModelEntry(f"dinov2-{short}14{reg}", "dinov2", arch, 14, "dinov2",
                 f"{_DINOV2}/dinov2_{short}14/dinov2_{short}14{reg.replace('-', '_')}_pretrain.pth", img_size=518,
                 layer_scale=True, num_registers=4 if reg else 0, **ffn)
      for short, arch, ffn in [("vits", "vit_small", {}), ("vitb", "vit_base", {}), ("vitl", "vit_large", {}),
                               ("vitg", "vit_giant2", dict(ffn="swiglu_packed", mlp_hidden=4096))]
      for reg in ("", "-reg4")],
    # DINOv3 weights are handed out after a licence form: no URL; the hash in the file name is checked.
    *[ModelEntry(f"dinov3-{short}16{plus}", "dinov3", arch, 16, "dinov3",
                 release_file=f"dinov3_{short}16{plus}_pretrain_lvd1689m-{suffix}.pth", get_it=_DINOV3_FORM,
                 layer_scale=True, num_registers=4, rope=True, **ffn)
      for short, plus, arch, suffix, ffn in [
          ("vits", "", "vit_small", "08c60483", {}),
          ("vits", "plus", "vit_small", "4057cbaa", dict(ffn="swiglu", mlp_hidden=1536)),
          ("vitb", "", "vit_base", "73cec8be", {}), ("vitl", "", "vit_large", "8aa4cbdd", {}),
          ("vith", "plus", "vit_huge_plus", "7c1da9a5", dict(ffn="swiglu", mlp_hidden=5120)),
          ("vit7b", "", "vit_7b", "a955f4ea", dict(ffn="swiglu", mlp_hidden=8192, qkv_bias=False))]],
]

REGISTRY: dict[str, ModelEntry] = {e.name: e for e in _ENTRIES}


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    REGISTRY[entry.name] = entry
    return entry


def get_entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))} "
                       "(or pass the path of a checkpoint file)") from None


# --- Tiny models pretrained by this project on the embedded dataset ---
# ViT dim 96 / depth 4 / 3 heads, patch 8, 64 px, trained on CPU on the embedded classification train pool by
# `make pretrain-tiny` (benchmark/tiny_models.py: recipes, steps and probe; model_zoo/weights/tiny-models.json:
# training times and linear-probe accuracies). float16 teacher (MAE: encoder) weights in the "lowshot" layout.
# A regeneration reproduces these sha256 only on the same machine, thread count and torch / timm versions.
_TINY_ARCH = dict(arch="vit_tiny", patch_size=8, img_size=64, embed_dim=96, depth=4, num_heads=3, layout="lowshot",
                  url=None)
for _name, _method, _sha256, _notes in [
    ("random-tiny", "dino", "34af8a2591ab89c7e58e569a3cd2f3d943409e0711ffe6abfc9c4b9626caa71a",
     "baseline: seeded random init (seed 0), evaluated with DINO's rules"),
    ("dino-tiny", "dino", "cbbc03134cb8939de9b8130a58775aabac1de74870173ad796428a3ca2d245a0", "400 steps x 64"),
    ("ibot-tiny", "ibot", "fb56fbfcdc0771b69138f65c2fb455d5b3e1bea2d28a84a0d5c47d452dd6ee6a", "360 steps x 64"),
    ("msn-tiny", "msn", "3582f6a3303da694322788aad5bc044189d6e2d878313f204049242193e30bf7", "540 steps x 64"),
    ("mae-tiny", "mae", "c3b1d95318853824bc7e9052a8939907573d259e8f5b5d5c651b5376d3b53852", "1350 steps x 64"),
    ("maskcluster-tiny", "maskcluster", "53d990205a7058af4d309ac3fb318e5445fd8f0a91765f45c9bdf8ba1aac3a15",
     "340 steps x 64"),
]:
    register(ModelEntry(_name, _method, bundled=f"weights/{_name}.safetensors", sha256=_sha256,
                        notes=f"tiny, embedded dataset; {_notes}", **_TINY_ARCH))


# --- Which sources each family can come from, and how exact each is (README "Models", `lowshot models`) ---
# registry / release file: this suite's loader, the official features to 1e-5 (../shared fixtures).
# timm: / hf: / py: the library's (or your) own forward, exact to it; it may differ from the official code.
FAMILY_SOURCES: dict[str, dict[str, str]] = {
    "dino": {"release file": "registry + file", "timm": "vit_small_patch16_224.dino", "hf": "facebook/dino-vits16"},
    "ibot": {"release file": "registry + file", "timm": "-", "hf": "-"},
    "mae": {"release file": "registry + file", "timm": "vit_base_patch16_224.mae", "hf": "facebook/vit-mae-base"},
    "msn": {"release file": "registry + file", "timm": "-", "hf": "facebook/vit-msn-small"},
    "maskcluster": {"release file": "file (lowshot pretrain)", "timm": "-", "hf": "-"},
    "dinov2": {"release file": "registry + file", "timm": "vit_small_patch14_reg4_dinov2.lvd142m",
               "hf": "facebook/dinov2-small"},
    "dinov3": {"release file": "registry (licence form) + file", "timm": "vit_small_patch16_dinov3_qkvb.lvd1689m",
               "hf": "facebook/dinov3-vits16-pretrain-lvd1689m"},
    "any other": {"release file": "-", "timm": "timm:<name>", "hf": "hf:<repo or dir>"},
}

"""Helpers shared by the test modules: reference fixtures, tiny configs, throw-away datasets.

Import them as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``); pytest
fixtures built on them live in ``conftest.py``.
"""

import importlib.util
import os
import re
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from avsegformer import add_avsegformer_config
from avsegformer.modeling.audio_backbone import AUDIO_BACKBONE_REGISTRY

REPO = Path(__file__).resolve().parents[1]
TOOLS_DIR = REPO / "tools"
CONFIG_DIR = REPO / "configs"
TINY_SYNTHETIC_CONFIG = CONFIG_DIR / "synthetic" / "avsegformer_tiny_s4.yaml"

#: Files produced by the original implementations: ``<repo>/../shared/reference`` (the layout of
#: the development machines and CI), or wherever ``AVSEGFORMER_REFERENCE_DIR`` points.
REFERENCE_DIR = Path(
    os.environ.get("AVSEGFORMER_REFERENCE_DIR", REPO.parent / "shared" / "reference")
)


def load_tool(name: str):
    """The script ``tools/<name>.py`` as a module (loaded once per test session), so tests call
    its functions in-process; ``sys.path`` is left alone."""
    module_name = f"avs_tool_{name}"
    if module_name not in sys.modules:
        path = TOOLS_DIR / f"{name}.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or not path.is_file():
            raise FileNotFoundError(f"no tool script {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]


def fixture_path(name: str) -> Path:
    """Path of a reference file: a key list (``"AVSegFormer_res50_s4.keys.txt"``), a fixture
    (``"head_tiny.pt"``, also looked up under ``fixtures/``), or a path relative to
    :data:`REFERENCE_DIR` (``"combo/fixtures/matcher.pt"``).

    A missing file fails the test, always: a reference check that is not run must never pass.
    """
    for path in (REFERENCE_DIR / name, REFERENCE_DIR / "fixtures" / name):
        if path.exists():
            return path
    pytest.fail(
        f"reference file {name!r} is missing under {REFERENCE_DIR}: the fidelity checks need "
        "the reference material beside the clone (../shared/reference) or "
        "AVSEGFORMER_REFERENCE_DIR pointing at it",
        pytrace=False,
    )


def load_fixture(name: str):
    """Load a reference ``.pt`` fixture with every tensor made contiguous (some are stored as
    overlapping strided views to keep the files small)."""

    def dense(obj):
        if torch.is_tensor(obj):
            return obj.contiguous()
        if isinstance(obj, dict):
            return {k: dense(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(dense(v) for v in obj)
        return obj

    return dense(torch.load(fixture_path(name), map_location="cpu", weights_only=True))


def read_key_list(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` rows of a reference ``*.keys.txt`` list (one ``key [d0,d1] dtype``
    per line), in file order."""
    entries = []
    for line in fixture_path(name).read_text().splitlines():
        key, shape, dtype = line.split()
        entries.append((key, tuple(int(s) for s in shape.strip("[]").split(",") if s), dtype))
    return entries


def synthesize_state_dict(entries, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A state dict with the names and shapes of a key list (:func:`read_key_list`) where entry
    ``i`` holds the value ``i`` everywhere (an expanded scalar of ``dtype``: no memory, exact up
    to 2048 in float16), or an int64 counter."""
    state_dict = {}
    for index, (name, shape, stored_dtype) in enumerate(entries):
        if stored_dtype == "int64":
            state_dict[name] = torch.tensor(index, dtype=torch.long)
        else:
            state_dict[name] = torch.tensor(float(index), dtype=dtype).expand(shape)
    return state_dict


def misplaced_entries(converted: dict, expected: dict[str, int]) -> list[str]:
    """Names of a converted state dict of :func:`synthesize_state_dict` entries that are missing
    or not expected, then those that do not hold their source's index (``expected``: our name ->
    index of its source entry). A synthesised entry is one value expanded, so its first element
    tells which entry it is (flattening would copy)."""
    wrong = sorted(set(expected) ^ set(converted))
    wrong += [
        name
        for name, index in expected.items()
        if name in converted and converted[name][(0,) * converted[name].dim()].item() != index
    ]
    return wrong


def expected_pvt_v2_name(name: str) -> str:
    """Our (timm) name of an official PVTv2 entry name without prefix (``block2.0.attn.q.weight``
    -> ``stages.1.blocks.0.attn.q.weight``), stated from the two model descriptions rather than
    from the converter's rules."""
    parts = name.split(".")
    head = parts[0]
    if head == "patch_embed1":
        return ".".join(["patch_embed", *parts[1:]])
    stage = int(head[-1]) - 1
    if head.startswith("patch_embed"):
        return ".".join([f"stages.{stage}.downsample", *parts[1:]])
    if head.startswith("norm"):
        return ".".join([f"stages.{stage}.norm", *parts[1:]])
    rest = ".".join(parts[2:]).replace("mlp.dwconv.dwconv.", "mlp.dwconv.")
    return f"stages.{stage}.blocks.{parts[1]}.{rest}"


def load_config(relative_path: str | os.PathLike):
    """A project config from ``configs/`` (relative path) with the project's keys added."""
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(os.fspath(CONFIG_DIR / relative_path))
    return cfg


def build_on_meta(config: str, *opts):
    """The model of a shipped config (path under ``configs/``, then ``KEY VALUE`` overrides),
    built on the meta device: shapes only, no weights, built in a second whatever its size."""
    cfg = load_config(config)
    cfg.merge_from_list(list(opts))
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


def tiny_avsegformer_cfg(num_classes: int = 1):
    """AVSegFormer on ResNet-18 with a narrow one-layer head: builds and runs in well under a
    second on 64x64 frames. Dropout off, so two forwards of the same batch agree."""
    cfg = load_config("Base-AVSegFormer.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.AUDIO.WEIGHTS = ""  # random VGGish: no pretrained files in tests
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    m = cfg.MODEL.AVSEGFORMER
    m.NUM_CLASSES = num_classes
    m.MASK_LOSS = "dice" if num_classes == 1 else "ce"
    m.HIDDEN_DIM = 64
    m.NUM_QUERIES = 6
    m.QUERY_GENERATOR_LAYERS = 1
    m.QUERY_GENERATOR_DIM_FEEDFORWARD = 32
    m.DEC_LAYERS = 1
    m.DIM_FEEDFORWARD = 32
    m.QUERY_MLP_DIM = 16
    m.DROPOUT = 0.0
    h = cfg.MODEL.SEM_SEG_HEAD
    h.CONVS_DIM = 64
    h.TRANSFORMER_ENC_LAYERS = 1
    h.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 32
    h.DEFORMABLE_TRANSFORMER_ENCODER_DROPOUT = 0.0
    return cfg


def tiny_modat_cfg(num_classes: int = 1):
    """MoDAT on :func:`tiny_avsegformer_cfg` with 4 experts of 2 heads, expert dropout off."""
    cfg = tiny_avsegformer_cfg(num_classes)
    cfg.MODEL.META_ARCHITECTURE = "MoDAT"
    cfg.MODEL.MODAT.NUM_EXPERTS = 4
    cfg.MODEL.MODAT.EXPERT_NHEADS = 2
    cfg.MODEL.MODAT.EXPERT_DROPOUT = 0.0
    return cfg


def random_clip(
    seed: int, *, frames: int = 2, size: int = 32, classes: int = 2, maskiges: bool = False
) -> dict:
    """A random training clip of the model I/O contract: uint8 ``frames`` (and ``maskiges``)
    ``[T, 3, size, size]``, ``log_mel`` ``[T, 96, 64]`` and ``sem_seg`` labels in
    ``[0, classes)`` on every frame."""
    generator = torch.Generator().manual_seed(seed)

    def image():
        return torch.randint(0, 256, (frames, 3, size, size), generator=generator).to(torch.uint8)

    clip = {"frames": image(), "log_mel": torch.randn(frames, 96, 64, generator=generator)}
    if maskiges:
        clip["maskiges"] = image()
    clip["sem_seg"] = torch.randint(0, classes, (frames, size, size), generator=generator)
    return clip


@AUDIO_BACKBONE_REGISTRY.register()
class TinyAudioBackbone(nn.Module):
    """A stand-in for VGGish in tiny test models (VGGish alone costs ~1 GFLOP per frame):
    ``[N, 1, 96, 64]`` -> 4x4 average pool -> Linear -> ReLU -> ``[N, MODEL.AUDIO.OUT_DIM]``."""

    def __init__(self, cfg):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.embeddings = nn.Linear(16, cfg.MODEL.AUDIO.OUT_DIM)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.embeddings(self.pool(log_mel).flatten(1)))


def tiny_pvt_cfg(base_config: str):
    """``base_config`` on CPU with a one-block-per-stage PVTv2 (widths 16-64, no drop-path) and
    the frozen :class:`TinyAudioBackbone` without weights."""
    cfg = load_config(base_config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.AUDIO.NAME = "TinyAudioBackbone"
    cfg.MODEL.AUDIO.WEIGHTS = ""
    p = cfg.MODEL.PVT
    p.EMBED_DIMS = [16, 32, 32, 64]
    p.DEPTHS = [1, 1, 1, 1]
    p.NUM_HEADS = [1, 1, 1, 1]
    p.MLP_RATIOS = [1, 1, 1, 1]
    p.DROP_PATH_RATE = 0.0
    return cfg


def tiny_combo_cfg(num_classes: int = 2, *, siam_encoder: bool = True):
    """COMBO on a one-block PVTv2 (16..64 channels) with a 32-wide head (9 decoder layers, so
    all 39 loss terms, but 10 queries and one encoder layer) and :class:`TinyAudioBackbone`
    (frozen): builds and runs in well under a second on 32x32 frames. Dropout and drop-path
    off, so two forwards of the same batch agree; no raw padding to 224."""
    cfg = tiny_pvt_cfg("Base-COMBO.yaml")
    cfg.MODEL.BACKBONE.NAME = "build_pvt_v2_backbone"
    h = cfg.MODEL.SEM_SEG_HEAD
    h.NUM_CLASSES = num_classes
    h.CONVS_DIM = 32
    h.MASK_DIM = 32
    h.TRANSFORMER_ENC_LAYERS = 1
    h.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 32
    m = cfg.MODEL.MASK_FORMER
    m.HIDDEN_DIM = 32
    m.NUM_OBJECT_QUERIES = 10
    m.NHEADS = 4
    m.DIM_FEEDFORWARD = 32
    m.TRAIN_NUM_POINTS = 64
    c = cfg.MODEL.COMBO
    c.SIAM_ENCODER = siam_encoder
    c.SIAM_REDUCTION = 8
    c.FUSION_NHEADS = 4
    c.FUSION_DROPOUT = 0.0
    c.AUDIO_MLP_DIM = 16
    c.PAD_SIZE_DIVISIBILITY = 0
    return cfg


def unique_dataset_name(prefix: str = "avs") -> str:
    return f"test_{prefix}_{uuid.uuid4().hex[:8]}"


def forget_dataset(name: str) -> None:
    """Remove ``name`` from both catalogs, if it is there."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


@contextmanager
def temporary_dataset(records: list[dict], **metadata):
    """Register ``records`` (and ``metadata``) under a fresh name for the ``with`` block."""
    name = unique_dataset_name()
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(**metadata)
    try:
        yield name
    finally:
        forget_dataset(name)


class FeaturesBackbone(nn.Module):
    """Stands in for the visual backbone of a model whose head is fed the features of a
    fixture: it only reports the output shapes (``res2``, ``res3``, ...)."""

    def __init__(self, channels, strides):
        super().__init__()
        self._shapes = {
            f"res{i + 2}": ShapeSpec(channels=c, stride=s)
            for i, (c, s) in enumerate(zip(channels, strides))
        }

    def output_shape(self):
        return self._shapes

    def forward(self, x):
        raise AssertionError("not used: the fixture provides the features")


#: Weights of the released CATR model that no output depends on (never called, or computed and
#: discarded): the four FeatureFusionBlocks, the stride-4 projection, the fusion module, the
#: temporal encoder's own cross-attentions, the unused 1x1 convs inside every cross-attention
#: block, and the last temporal layer's audio update (its output only feeds a next layer that
#: does not exist). Our CATR does not build them.
CATR_DEAD_KEY_PATTERNS = (
    r"(.*\.)?path[1-4]\..*",
    r"(.*\.)?conv1\.conv2d_list\..*",
    r"(.*\.)?fusion_module\..*",
    r"(.*\.)?temporal_encoder\.(av_atten|va_atten)\..*",
    r".*_atten\.vid_embed_proj\..*",
)


def is_dead_catr_key(name: str, num_encoder_layers: int = 3) -> bool:
    """Whether ``name`` (a released CATR state-dict key, with or without the ``transformer.``
    prefix) is a dead weight that our CATR does not build."""

    last = num_encoder_layers - 1
    patterns = CATR_DEAD_KEY_PATTERNS + (rf"(.*\.)?temporal_encoder\.layers\.{last}\.va_atten\..*",)
    return any(re.fullmatch(p, name) for p in patterns)


def catr_live_state_dict(state_dict: dict, num_encoder_layers: int = 3) -> dict:
    """A released CATR (sub-)module state dict without its dead weights."""
    return {k: v for k, v in state_dict.items() if not is_dead_catr_key(k, num_encoder_layers)}


def tiny_catr_cfg(num_frames: int = 5):
    """CATR on a one-block PVTv2 (16..64 channels) with a 64-wide transformer (3 + 3 encoder
    layers and 3 decoder layers as released, FFN 32, 4 heads, 6 queries) and
    :class:`TinyAudioBackbone` (frozen): 32x32 frames upsampled to a 64x64 model input. Dropout
    and drop-path off, so two forwards of the same batch agree; no AMP."""
    cfg = tiny_pvt_cfg("Base-CATR.yaml")
    cfg.MODEL.WEIGHTS = ""
    c = cfg.MODEL.CATR
    c.NUM_FRAMES = num_frames
    c.INPUT_SIZE = (64, 64)
    c.D_MODEL = 64
    c.NHEADS = 4
    c.DIM_FEEDFORWARD = 32
    c.DROPOUT = 0.0
    c.NUM_QUERIES = 6
    c.MASK_KERNELS_DIM = 16
    cfg.SOLVER.AMP.ENABLED = False
    return cfg

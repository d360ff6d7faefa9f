"""Every YAML under configs/ merges on top of Detectron2's defaults plus ours, and builds."""

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY

from avsegformer import add_avsegformer_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_configs_exist():
    assert CONFIG_DIR / "Base-AVSegFormer.yaml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_config_merges_and_builds(path):
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(str(path))
    if "combo" in path.name:
        assert cfg.MODEL.META_ARCHITECTURE == "COMBO"
    # A registered meta-architecture (get raises KeyError otherwise), built on the meta device:
    # the modules and their shapes, without computing any weight.
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_add_config_twice_keeps_values():
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.MODEL.AVSEGFORMER.NUM_QUERIES = 7
    add_avsegformer_config(cfg)
    assert cfg.MODEL.AVSEGFORMER.NUM_QUERIES == 7


def test_defaults_reproduce_the_original_r50_s4_setting():
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(str(CONFIG_DIR / "Base-AVSegFormer.yaml"))
    assert cfg.MODEL.AVSEGFORMER.NUM_QUERIES == 300
    assert cfg.MODEL.AVSEGFORMER.MIX_LOSS_WEIGHT == 0.1
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.MODEL.RESNETS.NORM == "BN"
    assert cfg.SOLVER.BASE_LR == 2e-5 and cfg.SOLVER.WEIGHT_DECAY == 0.01
    assert list(cfg.SOLVER.STEPS) == [] and cfg.SOLVER.WARMUP_ITERS == 0

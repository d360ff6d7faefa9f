"""``load_model_weights``: the checkpoint first, pretrained files only for what it leaves empty."""

import pytest
import torch
from detectron2.modeling import build_model
from helpers import tiny_avsegformer_cfg

from avsegformer.checkpoint import AtomicDetectionCheckpointer, load_model_weights


def constant_state(module: torch.nn.Module, offset: float) -> dict[str, torch.Tensor]:
    """A distinct constant per entry (expanded scalars: small files)."""
    return {
        name: torch.tensor(offset + 0.001 * i).expand(tensor.shape).to(tensor.dtype)
        for i, (name, tensor) in enumerate(module.state_dict().items())
        if tensor.is_floating_point()
    }


def assert_filled_with(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor.expand(state[name].shape)), name


@pytest.fixture
def setting(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_avsegformer_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "output")
    model = build_model(cfg)
    audio = constant_state(model.audio_backbone, 0.5)
    torch.save(audio, tmp_path / "vggish.pth")
    return cfg, model, audio, tmp_path


def test_training_start_fills_the_audio_backbone_from_the_pretrained_file(setting):
    cfg, model, audio, tmp_path = setting
    backbone = {f"backbone.{k}": v for k, v in constant_state(model.backbone, 2.0).items()}
    torch.save({"model": backbone}, tmp_path / "imagenet.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "imagenet.pth")
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "vggish.pth")
    load_model_weights(cfg, model)
    assert_filled_with(model.audio_backbone, audio)
    assert_filled_with(model, backbone)


def test_a_full_checkpoint_needs_no_pretrained_file(setting):
    cfg, model, audio, tmp_path = setting
    full = {k: v.clone() for k, v in model.state_dict().items()}
    full["audio_backbone.embeddings.4.bias"] = torch.full((128,), 7.0)
    torch.save({"model": full}, tmp_path / "full.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "full.pth")
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "absent" / "vggish.pth")  # never opened
    load_model_weights(cfg, model)
    assert torch.equal(model.audio_backbone.embeddings[4].bias, torch.full((128,), 7.0))


def test_from_scratch_and_missing_files(setting):
    cfg, model, audio, tmp_path = setting
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "vggish.pth")
    load_model_weights(cfg, model)
    assert_filled_with(model.audio_backbone, audio)

    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="absent.pth .*convert_pretrained_weights"):
        load_model_weights(cfg, model)
    cfg.MODEL.WEIGHTS = str(tmp_path / "no_such_checkpoint.pth")
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS .*no_such_checkpoint.pth"):
        load_model_weights(cfg, model)


def test_resume_takes_the_last_checkpoint_over_model_weights(setting):
    cfg, model, audio, tmp_path = setting
    saved = constant_state(model, 3.0)
    model.load_state_dict(saved, strict=False)
    AtomicDetectionCheckpointer(model, cfg.OUTPUT_DIR).save("model_0000004", iteration=4)
    torch.manual_seed(1)
    fresh = build_model(cfg)
    cfg.MODEL.WEIGHTS = str(tmp_path / "no_such_checkpoint.pth")  # not used when resuming
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "absent.pth")
    extra = load_model_weights(cfg, fresh, resume=True)
    assert extra["iteration"] == 4
    assert_filled_with(fresh, saved)

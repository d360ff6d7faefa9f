"""AVSegFormer meta-architecture: the model I/O contract, supervision rules and gradients.

Tiny configurations (ResNet-18, narrow head, 64x64 frames) keep every test fast; one full-size
ResNet-50 forward at 224x224 checks the real configuration.
"""

import time

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from helpers import CONFIG_DIR, fixture_path, tiny_avsegformer_cfg

from avsegformer import add_avsegformer_config
from avsegformer.checkpoint import convert_avsegformer_head
from avsegformer.modeling.criterion import AVSegFormerCriterion

FRAME = 64


def make_clip(num_frames, *, num_classes=1, size=FRAME, annotated=None, valid=None, seed=0):
    """A random clip dict; ``annotated[t]`` False makes frame t all-ignore (255)."""
    g = torch.Generator().manual_seed(seed)
    sem_seg = torch.randint(0, max(num_classes, 2), (num_frames, size, size), generator=g)
    for t, is_annotated in enumerate(annotated or [True] * num_frames):
        if not is_annotated:
            sem_seg[t] = 255
    clip = {
        "video_id": f"clip{seed}",
        "frames": torch.randint(
            0, 256, (num_frames, 3, size, size), dtype=torch.uint8, generator=g
        ),
        "log_mel": torch.randn(num_frames, 96, 64, generator=g),
        "sem_seg": sem_seg,
    }
    if valid is not None:
        clip["frame_valid"] = torch.tensor(valid)
    return clip


@pytest.fixture(scope="module")
def binary_model():
    torch.manual_seed(0)
    return build_model(tiny_avsegformer_cfg(1))


@pytest.fixture(scope="module")
def semantic_model():
    torch.manual_seed(0)
    return build_model(tiny_avsegformer_cfg(71))


def test_train_forward_gives_finite_losses_and_backward(binary_model):
    binary_model.train()
    losses = binary_model([make_clip(2, seed=1), make_clip(2, seed=2)])
    assert set(losses) == {"loss_mask", "loss_mix"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() > 0
    binary_model.zero_grad(set_to_none=True)
    total.backward()
    assert binary_model.mask_head.fc[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("model_name,num_classes", [("binary_model", 1), ("semantic_model", 71)])
def test_eval_returns_one_output_per_clip(request, model_name, num_classes):
    model = request.getfixturevalue(model_name).eval()
    clips = [make_clip(2, num_classes=num_classes, seed=3), make_clip(2, seed=4)]
    clips[1]["height"], clips[1]["width"] = 40, 50
    with torch.no_grad():
        outputs = model(clips)
    assert len(outputs) == 2
    assert outputs[0]["sem_seg"].shape == (2, num_classes, FRAME, FRAME)
    assert outputs[1]["sem_seg"].shape == (2, num_classes, 40, 50)
    for out in outputs:
        probs = out["sem_seg"]
        assert probs.dtype == torch.float32
        assert probs.min() >= 0 and probs.max() <= 1
        if num_classes > 1:
            torch.testing.assert_close(probs.sum(1), torch.ones_like(probs[:, 0]))


def test_eval_matches_frames_run_alone(binary_model):
    """Frames are independent in eval: a clip's output equals its frames run one by one."""
    binary_model.eval()
    clip = make_clip(2, seed=5)
    with torch.no_grad():
        together = binary_model([clip])[0]["sem_seg"]
        alone = [
            binary_model(
                [{"frames": clip["frames"][t : t + 1], "log_mel": clip["log_mel"][t : t + 1]}]
            )
            for t in range(2)
        ]
    torch.testing.assert_close(together, torch.cat([a[0]["sem_seg"] for a in alone]))


def test_unpadded_size_is_padded_and_cropped_back(binary_model):
    binary_model.eval()
    clip = make_clip(1, size=FRAME + 8, seed=6)
    with torch.no_grad():
        out = binary_model([clip])[0]["sem_seg"]
    assert out.shape == (1, 1, FRAME + 8, FRAME + 8)
    binary_model.train()
    losses = binary_model([make_clip(1, size=FRAME + 8, seed=6)])
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("model_name,num_classes", [("binary_model", 1), ("semantic_model", 71)])
def test_unannotated_and_padded_frames_are_not_supervised(request, model_name, num_classes):
    model = request.getfixturevalue(model_name).train()
    # Clip 0: frame 1 unannotated (S4 train); clip 1: frame 2 padded (AVSS v1 clip).
    clips = [
        make_clip(3, num_classes=num_classes, annotated=[True, False, True], seed=7),
        make_clip(
            3,
            num_classes=num_classes,
            annotated=[True, True, False],
            seed=8,
            valid=[True] * 2 + [False],
        ),
    ]
    head_batch_sizes = []
    hook = model.mask_head.register_forward_hook(
        lambda module, inputs, output: head_batch_sizes.append(output.shape[0])
    )
    try:
        with torch.no_grad():
            losses = model(clips)
            # The same network run on every frame, then scored on the full targets.
            frames = torch.cat([c["frames"] for c in clips]).float()
            frames = (frames - model.pixel_mean) / model.pixel_std
            log_mel = torch.cat([c["log_mel"] for c in clips])[:, None]
            valid = torch.tensor([True] * 5 + [False])
            every_frame = model.predict(frames, log_mel, valid)
    finally:
        hook.remove()
    # Only the 4 annotated frames went through the head in the training forward.
    assert head_batch_sizes == [4, 6]
    targets = torch.cat([c["sem_seg"] for c in clips])
    full = model.criterion(every_frame["pred_logits"], every_frame["mask_feature"], targets)
    for name in losses:
        torch.testing.assert_close(losses[name], full[name])

    # Whatever the network predicts on those frames, the loss does not change.
    noisy = {name: out.clone() for name, out in every_frame.items()}
    for out in noisy.values():
        out[[1, 5]] = torch.randn_like(out[[1, 5]]) * 5
    perturbed = model.criterion(noisy["pred_logits"], noisy["mask_feature"], targets)
    for name in losses:
        torch.testing.assert_close(perturbed[name], full[name])
    noisy["pred_logits"][0, 0] += 3.0
    changed = model.criterion(noisy["pred_logits"], noisy["mask_feature"], targets)
    assert not torch.allclose(changed["loss_mask"], full["loss_mask"])


def test_fully_unannotated_batch_gives_zero_loss_with_graph(binary_model):
    binary_model.train()
    losses = binary_model([make_clip(2, annotated=[False, False], seed=9)])
    total = sum(losses.values())
    assert total.item() == 0
    total.backward()  # still a graph: every rank can run the same backward


def test_padded_frames_get_zero_logits(semantic_model, binary_model):
    clip = make_clip(2, num_classes=71, valid=[True, False], seed=10)
    semantic_model.eval()
    with torch.no_grad():
        probs = semantic_model([clip])[0]["sem_seg"]
        torch.testing.assert_close(probs[1], torch.full_like(probs[1], 1 / 71))
        assert not torch.allclose(probs[0], torch.full_like(probs[0], 1 / 71))
        binary_model.eval()
        binary = binary_model([clip])[0]["sem_seg"]
    torch.testing.assert_close(binary[1], torch.full_like(binary[1], 0.5))

    frames = (clip["frames"].float() - semantic_model.pixel_mean) / semantic_model.pixel_std
    with torch.no_grad():
        raw = semantic_model.predict(frames, clip["log_mel"][:, None], clip["frame_valid"])
    assert raw["pred_logits"][1].abs().max() == 0 and raw["mask_feature"][1].abs().max() == 0
    assert raw["pred_logits"][0].abs().max() > 0
    with torch.no_grad():
        only_padding = semantic_model.predict(
            frames, clip["log_mel"][:, None], torch.tensor([False] * 2)
        )
    assert only_padding["pred_logits"].shape == raw["pred_logits"].shape
    assert only_padding["mask_feature"].shape == raw["mask_feature"].shape
    assert only_padding["pred_logits"].abs().max() == 0


@pytest.mark.parametrize("freeze_backbone", [True, False])
def test_gradients_reach_trainable_parameters_only(freeze_backbone):
    torch.manual_seed(0)
    model = build_model(tiny_avsegformer_cfg(1)).train()
    model.backbone.requires_grad_(not freeze_backbone)
    losses = model([make_clip(2, seed=11), make_clip(2, seed=12)])
    sum(losses.values()).backward()
    for name, param in model.named_parameters():
        if name.startswith("audio_backbone.") or (freeze_backbone and name.startswith("backbone.")):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None, name
            assert torch.isfinite(param.grad).all(), name
    no_signal = [
        name
        for name, p in model.named_parameters()
        if p.grad is not None and p.grad.abs().sum() == 0
    ]
    # The deformable attention's offset and weight projections start at zero, so the encoder
    # query (the only place the level embedding enters) has no effect at initialisation.
    assert no_signal == ["pixel_decoder.level_embed"]


def test_single_frame_single_clip(binary_model):
    binary_model.train()
    losses = binary_model([make_clip(1, seed=13)])
    sum(losses.values()).backward()
    binary_model.eval()
    with torch.no_grad():
        out = binary_model([make_clip(1, seed=13)])
    assert out[0]["sem_seg"].shape == (1, 1, FRAME, FRAME)


def test_bad_inputs_are_reported_with_the_clip(binary_model):
    clip = make_clip(2, seed=14)
    clip["log_mel"] = torch.zeros(3, 96, 64)
    with pytest.raises(ValueError, match="clip14.*log_mel"):
        binary_model([clip])
    binary_model.train()
    clip = make_clip(2, seed=14)
    del clip["sem_seg"]
    with pytest.raises(ValueError, match="clip14.*sem_seg"):
        binary_model([clip])


def test_mask_loss_must_fit_the_number_of_classes():
    cfg = tiny_avsegformer_cfg(71)
    cfg.MODEL.AVSEGFORMER.MASK_LOSS = "dice"
    with pytest.raises(ValueError, match="MASK_LOSS"):
        build_model(cfg)


@pytest.mark.parametrize(
    "subset,classes,loss,size,batch",
    [("s4", 1, "dice", 512, 2), ("ms3", 1, "dice", 512, 2), ("avss", 71, "ce", 224, 4)],
)
@pytest.mark.parametrize("backbone", ["R50", "pvtv2_b5"])
def test_task_configs(subset, classes, loss, size, batch, backbone):
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(str(CONFIG_DIR / subset / f"avsegformer_{backbone}.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "AVSegFormer"
    assert classes == cfg.MODEL.AVSEGFORMER.NUM_CLASSES
    assert loss == cfg.MODEL.AVSEGFORMER.MASK_LOSS
    assert tuple(cfg.INPUT.FRAME_SIZE) == (size, size) == tuple(cfg.TEST.AVS.EVAL_SIZE)
    assert batch == cfg.SOLVER.IMS_PER_BATCH
    assert (f"avsbench_{subset}_train",) == cfg.DATASETS.TRAIN
    expected_backbone = "build_resnet_backbone" if backbone == "R50" else "build_pvt_v2_backbone"
    assert expected_backbone == cfg.MODEL.BACKBONE.NAME
    assert list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES) == ["res2", "res3", "res4", "res5"]
    # Pretrained initialisation as in the original (converted files, never downloaded).
    assert cfg.MODEL.WEIGHTS.startswith("pretrained/") and cfg.MODEL.AUDIO.FREEZE
    assert cfg.MODEL.AUDIO.WEIGHTS == "pretrained/vggish.pth"


def _assert_head_keys_match_original(model, keys_file):
    """Every non-backbone key of an original checkpoint maps (by the converter) onto one of ours
    with the same shape, and nothing of ours outside the backbones is left over."""
    original = {}
    for line in fixture_path(keys_file).read_text().splitlines():
        name, shape = line.split()[:2]
        original[name] = tuple(int(d) for d in shape.strip("[]").split(",") if d)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {}
    for name, shape in original.items():
        if name.startswith(("backbone.", "vggish.")):
            continue
        if name.startswith("head."):
            converted = convert_avsegformer_head({name[len("head.") :]: torch.empty(0)})
            if not converted:  # a dead group of the original
                continue
            (name,) = converted
        mapped[name] = shape
    head_keys = {k for k in ours if not k.startswith(("backbone.", "audio_backbone."))}
    assert set(mapped) == head_keys
    assert {k: ours[k] for k in mapped} == mapped


def test_full_size_r50_forward_at_224():
    """The real S4 R50 configuration (random init) on one clip of two 224x224 frames."""
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(str(CONFIG_DIR / "s4" / "avsegformer_R50.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.AUDIO.WEIGHTS = ""  # random VGGish: no pretrained files in tests
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    # 126,737,216 parameters without the original's dead branches, VGGish (frozen) included.
    assert sum(p.numel() for p in model.parameters()) == 126_737_216
    assert trainable == 126_737_216 - 72_141_184
    _assert_head_keys_match_original(model, "AVSegFormer_res50_s4.keys.txt")
    clip = make_clip(2, size=224, seed=15)
    start = time.perf_counter()
    with torch.no_grad():
        out = model([clip])
    elapsed = time.perf_counter() - start
    assert out[0]["sem_seg"].shape == (2, 1, 224, 224)
    assert torch.isfinite(out[0]["sem_seg"]).all()
    print(f"full-size R50 eval forward, 2 frames at 224: {elapsed:.2f} s")


@pytest.mark.parametrize("mask_loss,num_classes", [("dice", 1), ("bce", 1), ("ce", 5)])
def test_ignored_pixels_are_neither_scored_nor_background(mask_loss, num_classes):
    criterion = AVSegFormerCriterion(mask_loss=mask_loss)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, num_classes, 16, 16, generator=g)
    mask_feature = torch.randn(2, 8, 4, 4, generator=g)
    targets = torch.randint(0, max(num_classes, 2), (2, 16, 16), generator=g)
    targets[:, :, 8:] = 255
    losses = criterion(logits, mask_feature, targets)

    noisy = logits.clone()
    noisy[..., 8:] = torch.randn(noisy[..., 8:].shape, generator=g) * 10
    for name, value in criterion(noisy, mask_feature, targets).items():
        torch.testing.assert_close(value, losses[name])
    as_background = criterion(logits, mask_feature, targets.masked_fill(targets == 255, 0))
    assert not torch.allclose(as_background["loss_mask"], losses["loss_mask"])
    assert not torch.allclose(as_background["loss_mix"], losses["loss_mix"])


def test_empty_frames_get_a_gradient_only_with_the_empty_frame_weight():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=g)
    mask_feature = torch.randn(2, 4, 4, 4, generator=g)
    targets = torch.zeros(2, 8, 8, dtype=torch.long)
    targets[0, :4, :4] = 1  # frame 0 has an object, frame 1 is empty (a negative clip)
    targets[1, :, 6:] = 255  # ignore stays ignore

    def loss_and_grad(weight):
        x = logits.clone().requires_grad_(True)
        loss = AVSegFormerCriterion(empty_frame_weight=weight)(x, mask_feature, targets)
        loss["loss_mask"].backward()
        return loss["loss_mask"], x.grad

    plain, plain_grad = loss_and_grad(0.0)
    # The original dice loss: the empty frame is 1 whatever the prediction, no gradient.
    assert plain_grad[1].abs().sum() == 0
    weighted, weighted_grad = loss_and_grad(2.0)
    assert torch.equal(weighted_grad[0], plain_grad[0])  # the annotated frame is unchanged
    assert (weighted_grad[1, 0, :, :6] > 0).all()  # every valid pixel pushed to background
    assert (weighted_grad[1, 0, :, 6:] == 0).all()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[1, 0, :, :6], torch.zeros(8, 6)
    )
    torch.testing.assert_close(weighted, (plain * 2 - 1 + 2.0 * bce) / 2)

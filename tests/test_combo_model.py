"""The COMBO meta-architecture: its checkpoint layout and parameter counts against the original's
(key lists of ``combo/``, counts measured on the original code), and its behaviour on tiny
configs (outputs, losses, gradients, the stages chained by hand, the query-audio quirk)."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from helpers import build_on_meta, load_config, read_key_list, tiny_combo_cfg
from torch.testing import assert_close

from avsegformer.checkpoint.backbones import pvt_v2_rules
from avsegformer.checkpoint.rules import apply_rules, rule
from avsegformer.modeling.mask_classification import foreground_probability, semantic_inference
from avsegformer.solver import build_optimizer

VGGISH_PARAMS = 72_141_184


def layout(model) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    }


def reference_layout(name: str, *, pvt: bool = False) -> dict[str, tuple[tuple[int, ...], str]]:
    """A reference key list; with ``pvt`` the two PVTv2 backbones renamed to the project's (timm)
    names, as the checkpoint converter does."""
    entries = {key: (shape, dtype) for key, shape, dtype in read_key_list(name)}
    if not pvt:
        return entries
    rules = [
        *pvt_v2_rules("backbone.", "backbone."),
        *pvt_v2_rules("pre_sam_backbone.", "pre_sam_backbone."),
        rule(r"(?!backbone\.|pre_sam_backbone\.)(.*)", r"\1"),
    ]
    tensors = {key: torch.empty(shape, device="meta") for key, (shape, _) in entries.items()}
    renamed = apply_rules(tensors, rules, name)
    dtype_of = dict(zip(tensors, (dtype for _, dtype in entries.values())))
    names = dict(zip(renamed, tensors))  # apply_rules keeps the order
    return {key: (tuple(t.shape), dtype_of[names[key]]) for key, t in renamed.items()}


def parameter_counts(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# the released configurations
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config,opts,keys,total,trainable",
    [
        ("s4/combo_R50.yaml", (), "COMBO_R50_s4", 158_903_091, 86_761_907),
        ("ms3/combo_R50.yaml", (), "COMBO_R50_ms3", 158_903_091, 86_761_907),
        ("avss/combo_R50.yaml", (), "COMBO_R50_avss", 158_920_824, 86_779_640),
        (
            "avss/combo_R50.yaml",
            ("MODEL.COMBO.FUSION_TYPE", "MHA-None"),
            "Test_COMBO_R50_avss",
            158_623_352,
            86_482_168,
        ),
    ],
    ids=["s4", "ms3", "avss", "avss-test-MHA-None"],
)
def test_r50_models_have_the_original_layout_and_counts(config, opts, keys, total, trainable):
    model = build_on_meta(config, *opts)
    assert layout(model) == reference_layout(f"combo/{keys}.keys.txt")
    assert parameter_counts(model) == (total, trainable)
    assert total - trainable == VGGISH_PARAMS


@pytest.mark.parametrize(
    "config,keys,total,trainable",
    [
        ("s4/combo_pvtv2_b5.yaml", "COMBO_PVTV2B5_s4", 273_507_203, 201_366_019),
        ("avss/combo_pvtv2_b5.yaml", "COMBO_PVTV2B5_avss", 273_524_936, 201_383_752),
    ],
    ids=["s4", "avss"],
)
def test_pvt_models_have_the_original_layout_and_counts(config, keys, total, trainable):
    model = build_on_meta(config)
    assert len(model.state_dict()) == 2457
    assert layout(model) == reference_layout(f"combo/{keys}.keys.txt", pvt=True)
    assert parameter_counts(model) == (total, trainable)


@pytest.mark.parametrize(
    "config,entries,total",
    [("s4/combo_R50.yaml", 602, 134_747_779), ("s4/combo_pvtv2_b5.yaml", 1389, 192_014_979)],
    ids=["R50", "pvtv2_b5"],
)
def test_without_siam_encoder_no_second_backbone(config, entries, total):
    model = build_on_meta(config, "MODEL.COMBO.SIAM_ENCODER", "False")
    keys = list(model.state_dict())
    assert len(keys) == entries
    assert not any(k.startswith(("pre_sam_backbone.", "scale_factor_module.")) for k in keys)
    assert parameter_counts(model)[0] == total


def test_visual_backbone_prefixes_name_both_visual_backbones():
    model = build_on_meta("s4/combo_R50.yaml")
    prefixes = model.visual_backbone_prefixes
    names = [n for n, _ in model.named_parameters()]
    in_backbones = [n for n in names if n.startswith(prefixes)]
    assert {n.split(".")[0] for n in in_backbones} == {"backbone", "pre_sam_backbone"}
    assert sum(model.get_parameter(n).numel() for n in in_backbones) == 2 * 23_454_912


@pytest.mark.parametrize("subset,classes", [("s4", 2), ("ms3", 2), ("avss", 71)])
@pytest.mark.parametrize("backbone", ["R50", "pvtv2_b5"])
def test_task_configs(subset, classes, backbone):
    cfg = load_config(f"{subset}/combo_{backbone}.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "COMBO"
    assert classes == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert cfg.SOLVER.IMS_PER_BATCH == 8 and cfg.SOLVER.BASE_LR == 1e-4
    assert (20_000 if subset == "ms3" else 90_000) == cfg.SOLVER.MAX_ITER
    assert (subset == "avss") == cfg.SOLVER.AMP.ENABLED
    assert (f"avsbench_{subset}_train",) == cfg.DATASETS.TRAIN
    assert cfg.INPUT.MASKIGE_FOLDER == "pre_SAM_mask"
    weights = "combo_R-50.pth" if backbone == "R50" else "combo_pvt_v2_b5.pth"
    assert f"pretrained/{weights}" == cfg.MODEL.WEIGHTS
    assert cfg.MODEL.AUDIO.WEIGHTS == "pretrained/vggish.pth" and cfg.MODEL.AUDIO.FREEZE
    s = cfg.SOLVER
    assert (s.LR_SCHEDULER_NAME, s.POLY_LR_POWER, s.WARMUP_ITERS) == ("WarmupPolyLR", 0.9, 0)
    assert (s.CLIP_GRADIENTS.CLIP_TYPE, s.CLIP_GRADIENTS.CLIP_VALUE) == ("full_model", 0.01)
    assert s.CLIP_GRADIENTS.ENABLED and s.BACKBONE_MULTIPLIER == 0.1
    assert s.WEIGHT_DECAY == 0.05 and s.WEIGHT_DECAY_NORM == 0.0 == s.WEIGHT_DECAY_EMBED
    i = cfg.INPUT
    assert i.AUGMENT and i.COLOR_AUG_SSD and i.RANDOM_FLIP == "horizontal"
    # S4/MS3: multi-scale resize, 224 crop and padding; AVSS: colour jitter and flip only.
    assert i.CROP.ENABLED == (subset != "avss") == any(i.MIN_SIZE_TRAIN)
    assert (-1 if subset == "avss" else 224) == i.SIZE_DIVISIBILITY


def test_the_backbone_multiplier_reaches_both_visual_backbones_only():
    cfg = tiny_combo_cfg()
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, param in model.named_parameters():
        visual = name.startswith(("backbone.", "pre_sam_backbone."))
        assert lr_of[id(param)] == pytest.approx(cfg.SOLVER.BASE_LR * (0.1 if visual else 1))


# ---------------------------------------------------------------------------------------------
# tiny configs
# ---------------------------------------------------------------------------------------------
def make_clip(seed: int, *, frames=5, size=(32, 32), classes=2, annotated=None, valid=None):
    """A random clip; ``annotated`` frames get labels (default all), the others 255."""
    g = torch.Generator().manual_seed(seed)
    clip = {
        "video_id": f"clip{seed}",
        "frames": torch.randint(0, 256, (frames, 3, *size), generator=g, dtype=torch.uint8),
        "maskiges": torch.randint(0, 256, (frames, 3, *size), generator=g, dtype=torch.uint8),
        "log_mel": torch.randn(frames, 96, 64, generator=g),
    }
    labels = torch.randint(0, classes, (frames, *size), generator=g)
    if annotated is not None:
        keep = torch.zeros(frames, dtype=torch.bool)
        keep[list(annotated)] = True
        labels[~keep] = 255
    clip["sem_seg"] = labels
    if valid is not None:
        clip["frame_valid"] = torch.tensor(valid)
    return clip


def tiny_model(num_classes=2, *opts, siam_encoder=True, seed=0):
    cfg = tiny_combo_cfg(num_classes, siam_encoder=siam_encoder)
    cfg.merge_from_list(list(opts))
    torch.manual_seed(seed)
    return build_model(cfg)


@pytest.fixture(scope="module")
def binary_model():
    return tiny_model(2).eval()


def test_eval_outputs_the_foreground_probability_per_clip(binary_model):
    clips = [make_clip(1), make_clip(2)]
    clips[1]["height"], clips[1]["width"] = 40, 48
    with torch.no_grad():
        outputs = binary_model(clips)
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(5, 1, 32, 32), (5, 1, 40, 48)]
    for out in outputs:
        probs = out["sem_seg"]
        assert torch.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1


def test_eval_avss_class_probabilities_and_padded_frames():
    model = tiny_model(71).eval()
    v1 = make_clip(3, classes=71)
    padded = {k: torch.cat([v, torch.zeros_like(v)]) for k, v in v1.items() if k != "video_id"}
    padded["frame_valid"] = torch.tensor([True] * 5 + [False] * 5)
    with torch.no_grad():
        (alone,) = model([v1])
        (out,) = model([padded])
    probs = out["sem_seg"]
    assert probs.shape == (10, 71, 32, 32)
    assert_close(probs.sum(1), torch.ones(10, 32, 32))
    # The real frames are decoded exactly as the 5-frame clip alone; padding never enters the
    # network and gets all-zero scores (uniform probabilities).
    assert_close(probs[:5], alone["sem_seg"], rtol=0, atol=1e-6)
    assert_close(probs[5:], torch.full_like(probs[5:], 1 / 71))


def test_stages_chained_by_hand_equal_the_model(binary_model):
    """Raw 128 padding + normalisation -> backbone, Siam-Encoder fusion -> pixel decoder ->
    fusion -> audio MLP -> decoder -> semantic inference -> foreground probability."""
    model = binary_model
    clip = make_clip(4, size=(26, 30))
    with torch.no_grad():
        (out,) = model([clip])
        head = model.sem_seg_head

        def normalise(images):
            padded = F.pad(images.float(), (0, 2, 0, 6), value=128.0)  # 26x30 -> 32x32
            return (padded - model.pixel_mean) / model.pixel_std

        features = model.backbone(normalise(clip["frames"]))
        maskige_features = model.pre_sam_backbone(normalise(clip["maskiges"]))
        for block, name in zip(model.scale_factor_module, ("res2", "res3", "res4", "res5")):
            features[name] = features[name] + block(maskige_features[name]) * maskige_features[name]
        audio = model.audio_backbone(clip["log_mel"][:, None]).unsqueeze(1)
        mask_features, _, multi_scale = head.pixel_decoder.forward_multi_scale(features)
        fused, audio = head.fusion_module({"res2": mask_features}, audio)
        decoded = head.predictor(multi_scale, head.audio_transformation(audio), fused["res2"])
        masks = F.interpolate(
            decoded["pred_masks"], size=(32, 32), mode="bilinear", align_corners=False
        )
        scores = semantic_inference(decoded["pred_logits"], masks)[..., :26, :30]
    assert_close(out["sem_seg"], foreground_probability(scores))


@pytest.mark.parametrize("mode,per_clip", [("batch", False), ("clip", True), ("frame", False)])
def test_query_audio_config(mode, per_clip):
    model = build_on_meta("s4/combo_R50.yaml", "MODEL.COMBO.QUERY_AUDIO", mode)
    assert model.sem_seg_head.query_audio_per_clip is per_clip
    assert model.sem_seg_head.predictor.per_frame_query_audio is (mode == "frame")


def test_query_audio_per_clip_differs_from_the_original_only_with_several_clips(binary_model):
    clips = [make_clip(5), make_clip(6)]
    head = binary_model.sem_seg_head
    outputs = {}
    try:
        for per_clip in (False, True):
            head.query_audio_per_clip = per_clip
            with torch.no_grad():
                outputs[per_clip] = (binary_model(clips[1:]), binary_model(clips))
    finally:
        head.query_audio_per_clip = False
    # One clip: the same arrangement. Two: per clip, each clip is decoded as when alone, while
    # the original gives the queries of one clip the other clip's audio too. A clip in a batch
    # of two goes through GEMMs of other sizes than alone, which round differently on some CPUs
    # (2.9e-5 seen on an AVX512-BF16 host); the other clip's audio moves it by ~7e-3.
    batch_noise = 2e-4
    assert_close(outputs[True][0][0]["sem_seg"], outputs[False][0][0]["sem_seg"])
    alone, in_batch = outputs[True][0][0]["sem_seg"], outputs[True][1][1]["sem_seg"]
    assert_close(in_batch, alone, atol=batch_noise, rtol=1e-4)
    assert (in_batch - outputs[False][1][1]["sem_seg"]).abs().max() > 10 * batch_noise


def test_training_returns_39_weighted_losses_and_reaches_every_parameter():
    model = tiny_model(2).train()
    # S4-like: only the first frame of each training clip is annotated.
    clips = [make_clip(7, annotated=[0]), make_clip(8, annotated=[0])]
    losses = model(clips)
    assert len(losses) == 39
    assert sum(k.startswith("loss_cosine_") for k in losses) == 9
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert not [n for n, p in trainable.items() if p.grad is None]
    assert not any(p.requires_grad for p in model.audio_backbone.parameters())


def test_training_avss_with_a_padded_clip():
    model = tiny_model(71).train()
    v1 = make_clip(9, frames=10, classes=71, annotated=[0], valid=[True] * 5 + [False] * 5)
    v2 = make_clip(10, frames=5, classes=71)
    losses = model([v1, v2])
    assert len(losses) == 39 and all(torch.isfinite(v) for v in losses.values())


def test_missing_maskiges_is_a_clear_error(binary_model):
    clip = make_clip(11)
    del clip["maskiges"]
    with pytest.raises(ValueError, match="clip11.*maskiges.*SIAM_ENCODER"):
        binary_model([clip])
    clip["maskiges"] = torch.zeros(5, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="clip11.*aligned"):
        binary_model([clip])


def test_without_siam_encoder_runs_without_maskiges():
    model = tiny_model(2, siam_encoder=False).eval()
    clip = make_clip(12)
    del clip["maskiges"]
    with torch.no_grad():
        (out,) = model([clip])
    assert out["sem_seg"].shape == (5, 1, 32, 32)


def test_bfloat16_autocast_keeps_the_pixel_decoder_in_float32(binary_model):
    clip = make_clip(13)
    seen = {}
    hook = binary_model.sem_seg_head.fusion_module.register_forward_pre_hook(
        lambda _, args: seen.update(dtype=args[0]["res2"].dtype)
    )
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            (out,) = binary_model([clip])
    finally:
        hook.remove()
    assert seen["dtype"] == torch.float32
    assert torch.isfinite(out["sem_seg"]).all()


def test_frozen_audio_embeddings_are_computed_once_per_example(binary_model):
    """A clip seen again reuses its audio embeddings, and the output is the same."""
    clip = make_clip(11)
    binary_model.eval()
    examples = []
    hook = binary_model.audio_backbone.register_forward_hook(
        lambda module, args, output: examples.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            first = binary_model([clip])[0]["sem_seg"]
            second = binary_model([clip])[0]["sem_seg"]
    finally:
        hook.remove()
    assert examples == [clip["log_mel"].shape[0]]  # the second pass did not run the backbone
    torch.testing.assert_close(first, second, rtol=0, atol=0)

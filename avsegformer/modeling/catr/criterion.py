"""CATR's set criterion: referred-query cross-entropy and three mask losses on the matched query,
for the last decoder layer and each auxiliary one."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CATRLayerwiseCriterion",
    "SUPERVISED_FRAME_MODES",
    "ReferredSetCriterion",
    "mask_bce_loss",
    "mask_dice_loss",
    "sigmoid_focal_loss",
    "supervised_times",
]

#: Values of ``MODEL.CATR.SUPERVISED_FRAMES``: "first" = frame 0 of every clip (the released S4
#: training), "annotated" = every frame annotated in all clips of the batch.
SUPERVISED_FRAME_MODES = ("first", "annotated")


def sigmoid_focal_loss(logits, targets, num_masks: float, alpha: float = 0.25, gamma: float = 2):
    """Focal loss (RetinaNet) per pixel, mean over the pixels of each mask, summed over masks
    and divided by ``num_masks``. ``logits``, ``targets``: ``[n, P]``."""
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def mask_dice_loss(logits, targets, num_masks: float):
    """``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per mask on ``p = sigmoid(logits)``,
    summed over masks and divided by ``num_masks``. ``logits``, ``targets``: ``[n, P]``."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def mask_bce_loss(logits, targets, *, double_sigmoid: bool = True):
    """Binary cross-entropy with logits, mean over every pixel.

    With ``double_sigmoid`` (the released "BCE" term) the logits go through a sigmoid first,
    so ``BCEWithLogits`` sees probabilities in (0, 1): a second sigmoid. Its minimum is 0.313
    on a foreground and 0.693 on a background pixel and its gradient is damped twice.
    """
    if double_sigmoid:
        logits = logits.sigmoid()
    return F.binary_cross_entropy_with_logits(logits, targets)


class CATRLayerwiseCriterion(nn.Module):
    """What CATR's criteria share: a class term (named by ``class_loss_name``) and three mask
    losses per decoder layer, the auxiliary layers' terms suffixed ``_0``, ``_1``, ... in layer
    order, and their weights. Subclasses give :meth:`layer_losses` and the key of the class
    logits in the model outputs (``logits_key``)."""

    class_loss_name: str
    logits_key: str

    def __init__(
        self,
        matcher: nn.Module,
        *,
        eos_coef: float = 0.1,
        class_weight: float = 1.0,
        focal_weight: float = 5.0,
        dice_weight: float = 5.0,
        bce_weight: float = 4.0,
        num_aux_layers: int = 2,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        double_sigmoid_bce: bool = True,
    ):
        super().__init__()
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.double_sigmoid_bce = double_sigmoid_bce
        base = {
            self.class_loss_name: class_weight,
            "loss_dice": dice_weight,
            "loss_sigmoid_focal": focal_weight,
            "bce_loss": bce_weight,
        }
        self.weight_dict = dict(base)
        for i in range(num_aux_layers):
            self.weight_dict.update({f"{k}_{i}": v for k, v in base.items()})

    def forward(self, outputs: dict, targets) -> dict[str, torch.Tensor]:
        """
        Args:
            outputs: ``pred_masks`` ``[T, B, Q, h, w]``, the class logits ``[T, B, Q, C]``
                under ``logits_key``, and optionally ``aux_outputs`` (a list of such dicts).
            targets: what the subclass's :meth:`layer_losses` takes.

        Returns:
            The unweighted losses by name.
        """
        key = self.logits_key
        losses = self.layer_losses(outputs["pred_masks"], outputs[key], targets)
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            aux_losses = self.layer_losses(aux["pred_masks"], aux[key], targets)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def weighted(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every loss times its weight (``weight_dict``)."""
        return {k: v * self.weight_dict[k] for k, v in losses.items()}

    def layer_losses(self, pred_masks, pred_logits, targets) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def mask_losses(self, flat_masks, flat_targets, num_masks: float, bce_inputs, bce_targets):
        """Focal and dice on ``[n, P]`` masks, and the "BCE" term on ``bce_inputs``."""
        return {
            "loss_sigmoid_focal": sigmoid_focal_loss(
                flat_masks, flat_targets, num_masks, self.focal_alpha, self.focal_gamma
            ),
            "loss_dice": mask_dice_loss(flat_masks, flat_targets, num_masks),
            "bce_loss": mask_bce_loss(
                bce_inputs, bce_targets, double_sigmoid=self.double_sigmoid_bce
            ),
        }

    def extra_repr(self) -> str:
        return f"eos_coef={self.eos_coef}, double_sigmoid_bce={self.double_sigmoid_bce}"


class ReferredSetCriterion(CATRLayerwiseCriterion):
    """CATR's training loss, each term per decoder layer (auxiliary layers get ``_0``,
    ``_1``, ... in layer order):

    * ``loss_is_referred``: 2-class log-softmax; the matched query of each clip is "referred",
      every other query "not referred" with weight ``eos_coef``; summed, divided by the number of
      (frame, clip) pairs;
    * ``loss_sigmoid_focal`` (alpha, gamma), ``loss_dice`` (smoothing 1): on the matched
      query's mask, bilinearly upsampled to the target size, divided by the number of target
      masks (one per supervised frame and clip);
    * ``bce_loss``: :func:`mask_bce_loss` on the same mask (double sigmoid unless
      ``double_sigmoid_bce`` is False).

    Each layer has its own matching (:class:`ReferredQueryMatcher`), shared by the frames of a
    clip. The model outputs carry ``pred_is_referred`` ``[T, B, Q, 2]`` for the supervised
    frames; the targets are ``[T, B, H, W]`` float in {0, 1}, each clip's sounding-object mask.
    """

    class_loss_name = "loss_is_referred"
    logits_key = "pred_is_referred"

    def layer_losses(self, pred_masks, pred_is_referred, target_masks) -> dict[str, torch.Tensor]:
        """The four losses of one decoder layer (shapes as in :meth:`forward`)."""
        t, b, q = pred_masks.shape[:3]
        query = self.matcher(pred_masks, pred_is_referred, target_masks)
        clips = torch.arange(b, device=pred_masks.device)
        matched = torch.zeros(t, b, q, dtype=torch.bool, device=pred_masks.device)
        matched[:, clips, query] = True
        log_probs = pred_is_referred.float().log_softmax(-1)
        nll = -torch.where(matched, log_probs[..., 0], log_probs[..., 1])
        weights = torch.where(matched, 1.0, self.eos_coef)
        loss_is_referred = (nll * weights).sum() / (t * b)

        masks = pred_masks[:, clips, query].flatten(0, 1).float()  # [T*B, h, w]
        targets = target_masks.flatten(0, 1).to(masks)
        masks = F.interpolate(
            masks[:, None], size=targets.shape[-2:], mode="bilinear", align_corners=False
        )
        num_masks = max(float(t * b), 1.0)
        losses = self.mask_losses(
            masks.flatten(1), targets.flatten(1), num_masks, masks, targets[:, None]
        )
        losses["loss_is_referred"] = loss_is_referred
        return losses


def supervised_times(labels: torch.Tensor, mode: str, ignore_label: int) -> torch.Tensor:
    """``[T']`` int64 frame indices the loss sees under ``mode`` (see
    :data:`SUPERVISED_FRAME_MODES`); ``labels``: ``[T, B, H, W]``, ``ignore_label`` where not
    annotated."""
    annotated = (labels != ignore_label).flatten(2).any(-1)  # [T, B]
    if mode == "first":
        if not bool(annotated[0].all()):
            raise ValueError(
                "MODEL.CATR.SUPERVISED_FRAMES='first': frame 0 of every training clip must "
                "be annotated"
            )
        return torch.zeros(1, dtype=torch.long, device=labels.device)
    if not bool((annotated == annotated[:, :1]).all()) or not bool(annotated.any()):
        raise ValueError(
            "MODEL.CATR.SUPERVISED_FRAMES='annotated': the clips of a batch must have "
            "annotations on the same frames (and at least one)"
        )
    return annotated[:, 0].nonzero().squeeze(1)

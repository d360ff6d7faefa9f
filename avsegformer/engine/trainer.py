"""``Trainer``: Detectron2's ``DefaultTrainer`` wired to AVSegFormer's data, solver and evaluator.

Differences from ``DefaultTrainer`` (v0.6), each for a reason:

* checkpoints are written atomically (:class:`AtomicDetectionCheckpointer`), so ``--resume``
  after a crash never meets a truncated file;
* DistributedDataParallel also runs on CPU (gloo): v0.6 passes ``device_ids=[local_rank]``,
  which PyTorch rejects for CPU modules; before each evaluation every process takes rank 0's
  buffers (BatchNorm statistics), so N processes score exactly like one;
* every iteration checks its losses before ``backward`` on every process, so a NaN stops the
  job with a message instead of silently poisoning the weights (or hanging the other ranks);
* ``SOLVER.AMP.ENABLED`` runs the forward under float16 autocast with gradient scaling on CUDA
  (as v0.6's ``AMPTrainer``, keeping the loss check) and under bfloat16 autocast without
  scaling on CPU, where ``AMPTrainer`` asserts CUDA; each model keeps its frozen audio backbone
  and its losses in float32;
* the optimizer state is checkpointed (v0.6 keeps only the iteration and the scheduler);
* the visual backbone is frozen for ``SOLVER.FREEZE_BACKBONE_ITERS`` iterations, and the best
  checkpoint by ``avs/mIoU`` is kept as ``model_best.pth``;
* with ``INPUT.NEGATIVE_AUDIO.START_ITER`` > 0 the data loader draws no negative audio until
  that iteration, then is rebuilt with negatives on (:class:`NegativeAudioStartHook`).
"""

import logging
import os
import time
import weakref

import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, hooks
from detectron2.engine.train_loop import TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from .. import solver
from ..checkpoint import AtomicDetectionCheckpointer, load_model_weights
from ..config.negative_audio import negative_audio_start_iter, without_negative_audio
from .hooks import (
    BackboneFreezeHook,
    NegativeAudioStartHook,
    NonFiniteLossError,
    StatefulBestCheckpointer,
    check_losses_finite,
)

__all__ = ["Trainer", "AVSTrainLoop", "create_ddp_model"]

logger = logging.getLogger(__name__)

#: The metric ``model_best.pth`` is chosen by.
BEST_METRIC = "avs/mIoU"


def create_ddp_model(model: torch.nn.Module, *, find_unused_parameters: bool = False):
    """Wrap ``model`` in DistributedDataParallel when more than one process runs.

    Args:
        model: the model, already on its device.
        find_unused_parameters: needed while some parameters get no gradient (frozen backbone).

    Returns:
        ``model`` itself for a single process, else the DDP wrapper (CPU: gloo, no device_ids).
    """
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    device_ids = [comm.get_local_rank()] if device.type == "cuda" else None
    return DistributedDataParallel(
        model,
        device_ids=device_ids,
        broadcast_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )


class AVSTrainLoop(SimpleTrainer):
    """``SimpleTrainer`` plus a finite-loss check on every process and optional mixed precision.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``.
        autocast_dtype: None for full precision, else the autocast dtype of the forward pass.
        grad_scaler: a ``torch.amp.GradScaler`` for float16 (its state is checkpointed under
            ``grad_scaler``, as by Detectron2's ``AMPTrainer``); None = no scaling.
    """

    def __init__(self, model, data_loader, optimizer, *, autocast_dtype=None, grad_scaler=None):
        super().__init__(model, data_loader, optimizer)
        self.autocast_dtype = autocast_dtype
        self.grad_scaler = grad_scaler

    def _check_losses(self, loss_dict) -> None:
        finite = all(bool(torch.isfinite(v.detach()).all()) for v in loss_dict.values())
        if comm.get_world_size() > 1:
            # Every process must stop together, or the healthy ones wait forever in all-reduce.
            flag = torch.tensor([0.0 if finite else 1.0])
            dist.all_reduce(flag, group=comm._get_global_gloo_group())
            if flag.item() > 0 and finite:
                raise NonFiniteLossError(
                    f"Loss became non-finite at iteration {self.iter} in another process; "
                    "training stopped (see that process's log for the loss terms)."
                )
        if not finite:
            check_losses_finite(loss_dict, self.iter)

    def run_step(self):
        if not self.model.training:
            raise RuntimeError("AVSTrainLoop: the model was switched to eval mode during training")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        device_type = "cuda" if next(self.model.parameters()).is_cuda else "cpu"
        with torch.autocast(
            device_type=device_type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        ):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        loss_dict = {k: v.float() for k, v in loss_dict.items()}
        self._check_losses(loss_dict)
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is None:
            losses.backward()
            self._write_metrics(loss_dict, data_time)
            self.optimizer.step()
            return
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        # Unscales first, so gradient clipping in the optimizer's step sees true gradients;
        # skips the step when a gradient overflowed.
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class Trainer(DefaultTrainer):
    """Train and evaluate AVSegFormer models from a config (see ``tools/train_net.py``)."""

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer.__init__, with our train loop, DDP wrapper and checkpointer.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        # Before INPUT.NEGATIVE_AUDIO.START_ITER the loader draws no negatives.
        negatives_later = negative_audio_start_iter(cfg) > 0
        data_loader = self.build_train_loader(
            without_negative_audio(cfg) if negatives_later else cfg
        )
        model = create_ddp_model(model, find_unused_parameters=cfg.SOLVER.FREEZE_BACKBONE_ITERS > 0)
        self._trainer = self._build_train_loop(cfg, model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True):
        """Load the weights to start from with :func:`load_model_weights`: the last checkpoint
        (``resume``), else ``MODEL.WEIGHTS``, then pretrained files for what they leave empty."""
        load_model_weights(
            self.cfg, self.checkpointer.model, resume=resume, checkpointer=self.checkpointer
        )
        if resume and self.checkpointer.has_checkpoint():
            # The checkpoint stores the iteration that just finished (restored into self.iter).
            self.start_iter = self.iter + 1

    def state_dict(self):
        # v0.6's DefaultTrainer checkpoints the iteration and hook states but not the optimizer.
        ret = super().state_dict()
        ret["optimizer"] = self.optimizer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "optimizer" not in state_dict:
            raise KeyError(
                "The checkpoint has no optimizer state (written by another trainer?); "
                "start without --resume and load it through MODEL.WEIGHTS instead"
            )
        self.optimizer.load_state_dict(state_dict["optimizer"])

    @staticmethod
    def _build_train_loop(cfg, model, data_loader, optimizer) -> SimpleTrainer:
        if not cfg.SOLVER.AMP.ENABLED:
            return AVSTrainLoop(model, data_loader, optimizer)
        if torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
            return AVSTrainLoop(
                model,
                data_loader,
                optimizer,
                autocast_dtype=torch.float16,
                grad_scaler=torch.amp.GradScaler("cuda"),
            )
        logger.info("SOLVER.AMP.ENABLED on CPU: bfloat16 autocast, no gradient scaling")
        return AVSTrainLoop(model, data_loader, optimizer, autocast_dtype=torch.bfloat16)

    def build_hooks(self):
        """Detectron2's default hooks plus the backbone freeze, the start of negative audio
        and the best-mIoU checkpoint."""
        ret = super().build_hooks()
        ret.insert(1, BackboneFreezeHook(self.cfg.SOLVER.FREEZE_BACKBONE_ITERS))
        start_iter = negative_audio_start_iter(self.cfg)
        if start_iter > 0:
            ret.insert(
                2, NegativeAudioStartHook(start_iter, lambda: self.build_train_loader(self.cfg))
            )
        if comm.is_main_process() and self.cfg.TEST.EVAL_PERIOD > 0 and self.cfg.DATASETS.TEST:
            # Right after the EvalHook that produces the metric, before the writers.
            eval_index = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(
                eval_index + 1,
                StatefulBestCheckpointer(
                    self.cfg.TEST.EVAL_PERIOD,
                    self.checkpointer,
                    BEST_METRIC,
                    "max",
                    min_iter=start_iter,
                ),
            )
        return ret

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Detectron2's ``test``, after giving every process rank 0's buffers.

        DDP runs with ``broadcast_buffers=False`` (as in Detectron2), so each process keeps its
        own BatchNorm running statistics; only rank 0's are checkpointed. Evaluating with them
        on every shard makes a multi-process evaluation equal to a one-process one.

        With ``TEST.NEGATIVE_AUDIO.ENABLED`` every test dataset is also scored under negative
        audio (:mod:`avsegformer.evaluation.negative_audio`), for any meta-architecture.
        """
        if comm.get_world_size() > 1:
            with torch.no_grad():
                for buffer in getattr(model, "module", model).buffers():
                    dist.broadcast(buffer, src=0)
        results = super().test(cfg, model, evaluators=evaluators)
        if evaluators is None and cfg.TEST.NEGATIVE_AUDIO.ENABLED:
            from ..evaluation.negative_audio import add_negative_audio_results

            results = add_negative_audio_results(cfg, model, results, cls.build_test_loader)
        return results

    @classmethod
    def build_optimizer(cls, cfg, model):
        return solver.build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return solver.build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        from ..data.dataset_mapper import AVSDatasetMapper

        return build_detection_train_loader(cfg, mapper=AVSDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """One clip per batch (Detectron2 v0.6's test loader has no batch size)."""
        from ..data.dataset_mapper import AVSDatasetMapper

        return build_detection_test_loader(
            cfg, dataset_name, mapper=AVSDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from ..evaluation import AVSBenchEvaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return AVSBenchEvaluator(cfg, dataset_name, output_dir=output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):  # noqa: N802  (Detectron2's name)
        raise NotImplementedError(
            "Test-time augmentation is not supported: it needs an audio-aware mapper."
        )

#!/usr/bin/env python
"""Train or evaluate an AVSegFormer model.

    python tools/train_net.py --config-file configs/synthetic/avsegformer_tiny_s4.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_best.pth
    python tools/train_net.py --config-file ... --resume          # continue after a crash
    python tools/train_net.py --config-file ... --num-gpus 8      # one machine, 8 GPUs
    torchrun --nproc_per_node 2 tools/train_net.py --config-file ...   # CPU (gloo) or GPU

Without a GPU, a config whose ``MODEL.DEVICE`` is ``cuda`` (every task config) runs on the CPU
after one warning.

On the main process the evaluation results are also written to ``OUTPUT_DIR/eval_results.json``.
"""

import json
import logging
import os

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from avsegformer.checkpoint import load_model_weights
from avsegformer.config import setup_cfg
from avsegformer.engine import Trainer, launch
from avsegformer.modeling.precision import apply_inference_precision

logger = logging.getLogger("avsegformer")

RESULTS_FILE = "eval_results.json"


def setup(args):
    """Config from ``--config-file`` and the trailing ``KEY VALUE`` overrides; logging; seeds."""
    cfg = setup_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="avsegformer")
    return cfg


def _write_results(cfg, results) -> None:
    if not comm.is_main_process() or not results:
        return
    path = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    logger.info("Evaluation results written to %s", path)


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_model_weights(cfg, model, resume=args.resume)
        apply_inference_precision(model.eval(), cfg.TEST.PRECISION)
        if cfg.TEST.AUG.ENABLED:
            Trainer.test_with_TTA(cfg, model)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        _write_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    _write_results(cfg, getattr(trainer, "_last_eval_results", None))
    return results


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()  # pragma: no cover

"""Start single- or multi-process training, on GPUs or on CPU.

Detectron2 v0.6's ``launch`` spawns one process per GPU and asserts CUDA, so it cannot run
several processes on a CPU machine. When the processes were already started by ``torchrun``
(which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``), :func:`launch` joins them itself: NCCL on GPUs, gloo on CPU,
plus the per-machine group that ``detectron2.utils.comm`` reads (``_LOCAL_PROCESS_GROUP``),
exactly as v0.6's own worker does. Everything else goes to Detectron2's ``launch``.
"""

import logging
import os
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["launch", "torchrun_world_size", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def torchrun_world_size() -> int:
    """Number of processes started by torchrun (or any launcher using its variables); 0 if none."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0
    return int(os.environ["WORLD_SIZE"])


def _init_from_torchrun(timeout: timedelta) -> None:
    world_size = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    machine_rank = int(os.environ.get("GROUP_RANK", rank // local_world_size))
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local_world_size > torch.cuda.device_count():
            raise RuntimeError(
                f"torchrun started {local_world_size} processes per machine but only "
                f"{torch.cuda.device_count()} GPUs are visible"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend, init_method="env://", world_size=world_size, rank=rank, timeout=timeout
    )
    if world_size % local_world_size:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} is not a multiple of LOCAL_WORLD_SIZE={local_world_size}"
        )
    if comm._LOCAL_PROCESS_GROUP is not None:
        raise RuntimeError("The local process group was already created in this process")
    # Every process must create every group, in the same order, even those it is not part of.
    for machine in range(world_size // local_world_size):
        ranks = list(range(machine * local_world_size, (machine + 1) * local_world_size))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    logger.info(
        "Joined torchrun process group: rank %d/%d (local %d/%d), backend %s",
        rank,
        world_size,
        local_rank,
        local_world_size,
        backend,
    )
    comm.synchronize()


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in every process of the job.

    Under torchrun the process-count arguments are ignored (torchrun already chose them) and the
    process group is set up here. Otherwise the call is Detectron2's ``launch``; asking it for
    several processes without CUDA is an error that points to torchrun.

    Returns:
        What ``main_func`` returns in this process (None when Detectron2 spawns workers).
    """
    world_size = torchrun_world_size()
    if world_size > 1:
        _init_from_torchrun(timeout)
        try:
            result = main_func(*args)
            # No barrier on failure: the other processes may never reach it.
            comm.synchronize()
            return result
        finally:
            dist.destroy_process_group()
            comm._LOCAL_PROCESS_GROUP = None
    if world_size == 1:
        return main_func(*args)
    if num_gpus_per_machine * num_machines > 1 and not torch.cuda.is_available():
        raise RuntimeError(
            f"--num-gpus {num_gpus_per_machine} --num-machines {num_machines} needs CUDA. "
            "To train with several processes on CPU, start them with torchrun, e.g. "
            "`torchrun --nproc_per_node 2 tools/train_net.py --config-file ...`."
        )
    if num_gpus_per_machine * num_machines == 1:
        return main_func(*args)
    return d2_launch(
        main_func,
        num_gpus_per_machine,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=args,
        timeout=timeout,
    )

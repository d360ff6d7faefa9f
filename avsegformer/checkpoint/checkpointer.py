"""Crash-safe checkpointing, and a record of what a load filled.

fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into ``<name>.pth`` and then
overwrites ``last_checkpoint`` in place, so a process killed mid-write leaves a truncated file
that ``--resume`` then tries to load. Here both are written to a temporary file in the same
folder, flushed to disk and renamed over the target (``os.replace`` is atomic on POSIX and
Windows), so ``last_checkpoint`` only ever names a complete file.
"""

import logging
import os
from collections.abc import Callable
from typing import IO, Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicDetectionCheckpointer", "atomic_write"]

logger = logging.getLogger(__name__)

#: Marks temporary files; a crash can leave one behind, and nothing ever reads it.
TMP_INFIX = ".tmp-"


def _fsync_dir(path: str) -> None:
    # The rename itself must reach the disk, or a power loss can bring back the old name.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` so that readers see the old file or the whole new one.

    Args:
        path: the destination file; its folder must exist.
        write: called with a binary file object opened on a temporary file next to ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp_path = f"{path}{TMP_INFIX}{os.getpid()}"
    try:
        with open(tmp_path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave our own half-written file behind.
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_dir(folder)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` whose ``save`` and ``last_checkpoint`` tag are atomic.

    Loading is unchanged, but records the model entries the loaded file did not fill
    (:attr:`missing_keys`), so that pretrained files can fill exactly those. Only local paths are
    supported for saving (``OUTPUT_DIR`` is local in every Detectron2 workflow); a path that is
    not a local folder is an error.
    """

    #: Entries of the model the last loaded file did not fill; None until a file was loaded.
    missing_keys: list[str] | None = None

    def _load_model(self, checkpoint: dict[str, Any]):
        incompatible = super()._load_model(checkpoint)
        self.missing_keys = list(incompatible.missing_keys)
        return incompatible

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` with the model, every checkpointable and ``kwargs``,
        then point ``last_checkpoint`` at it."""
        if not self.save_dir or not self.save_to_disk:
            return
        if not os.path.isdir(self.save_dir):
            os.makedirs(self.save_dir, exist_ok=True)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"Checkpoint name {name!r} must not contain a folder")
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record ``last_filename_basename`` as the checkpoint to resume from."""
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(save_file, lambda f: f.write(last_filename_basename.encode("utf-8")))

"""Embeddings of a frozen audio backbone, computed once per log-mel example.

A frozen audio backbone (VGGish in every released config) maps the same log-mel example to the
same embedding at every epoch and every evaluation, and in the CPU-sized synthetic configs it
costs about as much as a visual backbone's forward pass. :class:`FrozenAudioEmbeddings` keeps
each example's embedding, keyed by the example's bytes, and runs the backbone only on the
examples it has not seen. Entries are kept per train/eval mode of the backbone, and all are
dropped whenever its weights, dtype or device change or autocast is switched, so the cache
never returns an embedding the backbone would not compute now. A trainable backbone is simply
called.

The cache holds at most ``max_entries`` embeddings (``MODEL.AUDIO.EMBEDDING_CACHE_SIZE``) and
drops the least recently used first: audio that never repeats, such as fresh noise negatives
drawn every iteration, cycles through a bounded cache instead of growing it. A VGGish entry
(128 float32 values and a 16-byte key) costs about 0.7 kB, so the default 4096 entries hold
the audio of every training clip of AVSBench S4 for ~3 MB.
"""

import hashlib
from collections import OrderedDict

import torch
from torch import nn

__all__ = ["DEFAULT_CACHE_SIZE", "FrozenAudioEmbeddings"]

#: Default of ``MODEL.AUDIO.EMBEDDING_CACHE_SIZE``.
DEFAULT_CACHE_SIZE = 4096


class FrozenAudioEmbeddings:
    """Runs an audio backbone on log-mel examples, reusing earlier results when it is frozen.

    Args:
        max_entries: embeddings kept (least recently used dropped first); random audio such as
            noise negatives only ever misses. 0 turns caching off: a frozen backbone then runs
            on every call (still without autograd).
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE):
        if max_entries < 0:
            raise ValueError(
                f"MODEL.AUDIO.EMBEDDING_CACHE_SIZE must be >= 0 (0 = no cache), got {max_entries}"
            )
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._backbone_state = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._backbone_state = None

    def __call__(self, backbone: nn.Module, log_mel: torch.Tensor, *, frozen: bool) -> torch.Tensor:
        """
        Args:
            backbone: ``[N, ...] -> [N, D]``, one embedding per example.
            log_mel: ``[N, ...]`` examples (``[N, 1, 96, 64]`` for VGGish).
            frozen: the backbone gets no gradient: it runs without autograd and its results
                are reused. False: ``backbone(log_mel)``, with gradients as the caller has them.

        Returns:
            ``[N, D]``, the backbone's output (detached when ``frozen``).
        """
        if not frozen or log_mel.shape[0] == 0 or self.max_entries == 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                return backbone(log_mel)
        with torch.no_grad():
            self._check_backbone_state(backbone, log_mel.device)
            keys = _example_keys(log_mel, backbone.training)
            missing = [i for i, key in enumerate(keys) if key not in self._entries]
            if missing:
                rows = torch.as_tensor(missing, device=log_mel.device)
                computed = backbone(log_mel.index_select(0, rows))
                for i, embedding in zip(missing, computed):
                    self._entries[keys[i]] = embedding.clone()
            for key in keys:
                self._entries.move_to_end(key)
            embeddings = torch.stack([self._entries[key] for key in keys])
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return embeddings

    def _check_backbone_state(self, backbone: nn.Module, device: torch.device) -> None:
        """Drop every entry when anything that decides the backbone's output has changed."""
        tensors = [*backbone.parameters(), *backbone.buffers()]
        state = (
            device.type,
            torch.is_autocast_enabled(device.type),
            torch.get_autocast_dtype(device.type),
            # In-place updates (optimiser steps, load_state_dict's copy_) bump _version;
            # replaced tensors (.to(), re-assignment) change data_ptr.
            tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors),
        )
        if state != self._backbone_state:
            self._entries.clear()
            self._backbone_state = state


def _example_keys(log_mel: torch.Tensor, training: bool) -> list:
    """One digest per example ``log_mel[i]``, of its shape, dtype and bytes and the mode."""
    flat = log_mel.detach().contiguous().cpu()
    raw = flat.view(torch.uint8).reshape(flat.shape[0], -1).numpy()
    header = f"{tuple(flat.shape[1:])}{flat.dtype}{training}".encode()
    return [hashlib.blake2b(header + row.tobytes(), digest_size=16).digest() for row in raw]

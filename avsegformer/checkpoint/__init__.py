"""Everything about weight files: converting original checkpoints and pretrained weights to our
names, reading weight files, loading a built model's weights, and crash-safe saving.

* :mod:`.rules`: the rename-rule machinery of every converter;
* :mod:`.backbones`: key maps of pretrained ResNet, PVTv2 and VGGish files;
* :mod:`.avsegformer`: the key map of original AVSegFormer checkpoints;
* :mod:`.modat`: the key map of original MoDAT checkpoints;
* :mod:`.catr`: the key map of original CATR checkpoints;
* :mod:`.combo`: the key maps of original COMBO checkpoints and of COMBO's backbone files;
* :mod:`.families`: which original code wrote a checkpoint (``register_checkpoint_family``);
* :mod:`.files`: ``torch.load`` that never runs pickled code;
* :mod:`.pretrained`: :func:`load_model_weights`, the weight loading of every tool;
* :mod:`.checkpointer`: :class:`AtomicDetectionCheckpointer`.
"""

# Importing .avsegformer, .catr, .combo and .modat registers their checkpoint families.
from .avsegformer import convert_avsegformer_checkpoint, convert_avsegformer_head
from .backbones import convert_pvt_v2, convert_torchvision_resnet, convert_vggish
from .catr import CATR_DEAD_WEIGHTS, convert_catr_checkpoint
from .checkpointer import AtomicDetectionCheckpointer, atomic_write
from .combo import COMBO_VISUAL_BACKBONES, convert_combo_backbone, convert_combo_checkpoint
from .families import (
    CheckpointFamily,
    checkpoint_families,
    convert_checkpoint,
    convert_checkpoint_file,
    detect_checkpoint_family,
    register_checkpoint_family,
)
from .files import load_detectron2_pickle, load_tensor_file, load_weights_file
from .modat import (
    convert_modat_checkpoint,
    convert_modat_head,
    convert_modat_mixer,
    convert_modat_query_generator,
)
from .pretrained import load_model_weights, load_pretrained_audio_backbone, read_audio_weights
from .rules import unwrap_state_dict

__all__ = [
    "COMBO_VISUAL_BACKBONES",
    "AtomicDetectionCheckpointer",
    "CATR_DEAD_WEIGHTS",
    "CheckpointFamily",
    "atomic_write",
    "checkpoint_families",
    "convert_avsegformer_checkpoint",
    "convert_avsegformer_head",
    "convert_catr_checkpoint",
    "convert_checkpoint",
    "convert_checkpoint_file",
    "convert_combo_backbone",
    "convert_combo_checkpoint",
    "convert_modat_checkpoint",
    "convert_modat_head",
    "convert_modat_mixer",
    "convert_modat_query_generator",
    "convert_pvt_v2",
    "convert_torchvision_resnet",
    "convert_vggish",
    "detect_checkpoint_family",
    "load_model_weights",
    "load_detectron2_pickle",
    "load_pretrained_audio_backbone",
    "load_tensor_file",
    "load_weights_file",
    "read_audio_weights",
    "register_checkpoint_family",
    "unwrap_state_dict",
]

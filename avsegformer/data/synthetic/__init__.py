"""A small synthetic AVSBench (S4, MS3 and AVSS layouts) in AVSBench's exact on-disk format.

Every clip shows 2-4 objects drawn from K classes; each class has its own shape, colour and
texture (:mod:`.scene`), and its own sound, a harmonic tone stack at a class-specific pitch,
amplitude-modulated at a class-specific rate (:mod:`.sound`). Only the *sounding* objects are in
the ground truth, silent objects look exactly like sounding ones of their class, and every clip
has at least one silent object of another class (:mod:`.clips`). Vision alone cannot tell which
object to segment (predicting every object scores about half the mIoU of the exact masks); the
audio tells which class sounds.

:func:`generate` writes the three layouts described in :mod:`avsegformer.data.datasets.layout`
(:mod:`.writer`); the AVSS class table lists the K synthetic classes as 1..K. The output is a
function of the seed only: each clip has its own random stream, so changing the split sizes
does not change the other clips. ``datasets/prepare_synthetic_avsbench.py`` is the command line.
"""

from .clips import SUBSETS, SyntheticClip, clip_rng, dataset_clip, make_clip
from .scene import CLASS_LOOKS, MAX_CLASSES, ClassLook, SceneObject, place_objects, render_frames
from .sound import class_sound, mix_audio
from .writer import avss_class_names, generate

__all__ = [
    "CLASS_LOOKS",
    "MAX_CLASSES",
    "SUBSETS",
    "ClassLook",
    "SceneObject",
    "SyntheticClip",
    "avss_class_names",
    "class_sound",
    "clip_rng",
    "dataset_clip",
    "generate",
    "make_clip",
    "mix_audio",
    "place_objects",
    "render_frames",
]

"""What a synthetic clip shows: the classes' looks (shape, colour, texture) and sounds' pitches,
object placement and motion, and the drawing of frames and per-object masks."""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

__all__ = [
    "CLASS_LOOKS",
    "MAX_CLASSES",
    "ClassLook",
    "SceneObject",
    "place_objects",
    "render_frames",
]

#: How far (px at 224 px) an object moves over a whole clip, at most.
MAX_TRAVEL = 12.0


@dataclass(frozen=True)
class ClassLook:
    """What a class looks and sounds like. Silent and sounding objects share it."""

    name: str
    shape: str
    color: Tuple[int, int, int]
    texture: str
    pitch_hz: float
    modulation_hz: float


CLASS_LOOKS = (
    ClassLook("red_disc", "disc", (220, 40, 40), "solid", 220.0, 2.0),
    ClassLook("green_square", "square", (40, 190, 60), "hstripes", 311.0, 3.0),
    ClassLook("blue_triangle", "triangle", (50, 80, 230), "solid", 440.0, 4.0),
    ClassLook("yellow_ring", "ring", (235, 215, 40), "solid", 622.0, 5.0),
    ClassLook("magenta_diamond", "diamond", (210, 50, 200), "checker", 880.0, 6.0),
    ClassLook("cyan_cross", "cross", (40, 210, 220), "solid", 1245.0, 7.0),
    ClassLook("orange_ellipse", "ellipse", (245, 140, 30), "vstripes", 1760.0, 2.5),
    ClassLook("white_octagon", "octagon", (235, 235, 235), "dots", 2490.0, 3.5),
    ClassLook("purple_hourglass", "hourglass", (120, 40, 170), "solid", 165.0, 4.5),
    ClassLook("teal_halfdisc", "halfdisc", (20, 130, 120), "dstripes", 3520.0, 5.5),
)
MAX_CLASSES = len(CLASS_LOOKS)


@dataclass
class SceneObject:
    """One object of a clip: its class, size, position in frame 0 and motion."""

    class_index: int  # 0-based index into CLASS_LOOKS
    radius: float
    center: Tuple[float, float]  # (y, x) in frame 0
    velocity: Tuple[float, float]  # (dy, dx) per frame
    sounding: bool


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    ay, ax = np.abs(dy), np.abs(dx)
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return np.maximum(ay, ax) <= 0.8 * r
    if shape == "triangle":
        return (dy <= 0.7 * r) & (ax <= (dy + r) * 0.62)
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "diamond":
        return ay + ax <= r
    if shape == "cross":
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == "ellipse":
        return (dx / r) ** 2 + (dy / (0.55 * r)) ** 2 <= 1
    if shape == "octagon":
        return (ax <= 0.85 * r) & (ay <= 0.85 * r) & (ax + ay <= 1.2 * r)
    if shape == "hourglass":
        return (ay <= 0.85 * r) & (ax <= 0.15 * r + 0.75 * ay)
    if shape == "halfdisc":
        return (dy**2 + dx**2 <= r**2) & (dy >= -0.15 * r)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Brightness factor in (0, 1] over the object, a class signature like colour and shape."""
    period = max(r / 3.0, 3.0)
    if texture == "solid":
        return np.ones_like(dy)
    if texture == "hstripes":
        return np.where(np.floor(dy / period) % 2 == 0, 1.0, 0.55)
    if texture == "vstripes":
        return np.where(np.floor(dx / period) % 2 == 0, 1.0, 0.55)
    if texture == "dstripes":
        return np.where(np.floor((dx + dy) / period) % 2 == 0, 1.0, 0.55)
    if texture == "checker":
        return np.where((np.floor(dy / period) + np.floor(dx / period)) % 2 == 0, 1.0, 0.5)
    if texture == "dots":
        fy = (dy / period) % 1.0 - 0.5
        fx = (dx / period) % 1.0 - 0.5
        return np.where(fy**2 + fx**2 <= 0.09, 0.45, 1.0)
    raise ValueError(f"unknown texture {texture!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour gradient, different for every clip (float32 [H, W, 3])."""
    a, b = rng.uniform(40, 150, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)
    return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)


def place_objects(
    rng: np.random.Generator,
    classes: Sequence[int],
    sounding: Sequence[bool],
    size: int,
    num_frames: int,
) -> List[SceneObject]:
    """Objects that stay inside the frame and never touch each other during the clip.

    Each object gets its own cell of a 2x2 grid (random cells) and stays inside it for the
    whole clip, which guarantees this without rejection sampling.
    """
    if len(classes) > 4:
        raise ValueError(f"at most 4 objects per clip, got {len(classes)}")
    scale = size / 224.0
    travel = MAX_TRAVEL * scale
    # The whole clip moves an object by `travel` px at most, whatever its length.
    speed = travel / max(num_frames - 1, 1) / np.sqrt(2)
    cell = size / 2.0
    cells = rng.permutation(4)[: len(classes)]
    objects = []
    for class_index, is_sounding, cell_index in zip(classes, sounding, cells):
        radius = min(rng.uniform(30, 46) * scale, cell / 2 - travel - 2)
        low = np.array([cell_index // 2, cell_index % 2]) * cell + radius + travel + 1
        high = low + cell - 2 * (radius + travel + 1)
        center = tuple(rng.uniform(low, np.maximum(high, low)))
        velocity = tuple(rng.uniform(-speed, speed, size=2))
        objects.append(SceneObject(class_index, radius, center, velocity, is_sounding))
    return objects


def render_frames(
    rng: np.random.Generator, objects: Sequence[SceneObject], size: int, num_frames: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Draw the clip: frames uint8 [T, H, W, 3] and visible object masks bool [T, N, H, W]."""
    background = _background(rng, size)
    coords = np.arange(size, dtype=np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, len(objects), size, size), dtype=bool)
    for t in range(num_frames):
        # A global flicker instead of pixel noise: pixel noise makes PNG writing 5x slower.
        image = background * rng.uniform(0.95, 1.05)
        for index, obj in enumerate(objects):
            look = CLASS_LOOKS[obj.class_index]
            cy = obj.center[0] + obj.velocity[0] * t
            cx = obj.center[1] + obj.velocity[1] * t
            # Only the object's bounding box is computed.
            y0, y1 = max(int(cy - obj.radius) - 1, 0), min(int(cy + obj.radius) + 2, size)
            x0, x1 = max(int(cx - obj.radius) - 1, 0), min(int(cx + obj.radius) + 2, size)
            dy = (coords[y0:y1] - cy)[:, None]
            dx = (coords[x0:x1] - cx)[None, :]
            dy, dx = np.broadcast_arrays(dy, dx)
            inside = _shape_mask(look.shape, dy, dx, obj.radius)
            shade = _texture(look.texture, dy[inside], dx[inside], obj.radius)
            image[y0:y1, x0:x1][inside] = np.asarray(look.color, np.float32) * shade[:, None]
            box = masks[t, :, y0:y1, x0:x1]
            box[:, inside] = False  # later objects hide earlier ones
            box[index] = inside
        frames[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return frames, masks

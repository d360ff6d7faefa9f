"""What every clip dataset shares when it goes into Detectron2's catalogs: the lazily called
loader, frame-size probing, and the checks on a new name."""

from collections.abc import Callable

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from PIL import Image

from ..errors import AVSDataError

__all__ = ["ClipLoader", "check_name_is_free", "new_metadata", "probe_frame_size"]


class ClipLoader:
    """The lazily called dataset function registered in ``DatasetCatalog``.

    Calling it returns fresh records tagged with the dataset name; ``probe_sizes=False``
    skips opening frames (the dataset validator uses it to list every clip even when files are
    missing).
    """

    def __init__(self, name: str, load: Callable[..., list[dict]]):
        self.name = name
        self._load = load

    def __call__(self, probe_sizes: bool = True) -> list[dict]:
        records = self._load(probe_sizes=probe_sizes)
        for record in records:
            record["dataset_name"] = self.name
        return records


def probe_frame_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of a frame from its header; an error naming the frame if unreadable."""
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise AVSDataError(f"{path}: cannot read frame ({err})") from err
    return height, width


def check_name_is_free(name: str) -> None:
    """Refuse a name already in ``DatasetCatalog`` or with metadata already set."""
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset {name!r} is already registered")
    # MetadataCatalog.get() creates an empty entry on first access: only real content counts.
    if name in MetadataCatalog.list() and len(vars(MetadataCatalog.get(name))) > 1:
        raise ValueError(f"metadata of dataset {name!r} is already set")


def new_metadata(name: str, cls: type = Metadata) -> Metadata:
    """A fresh ``cls`` metadata object placed in ``MetadataCatalog`` under ``name``."""
    metadata = cls(name=name)
    MetadataCatalog[name] = metadata
    return metadata

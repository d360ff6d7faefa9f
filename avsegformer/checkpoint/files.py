"""Reading weight files safely: ``torch.load`` on CPU, and Detectron2's ``.pkl`` weight files,
without ever executing pickled code."""

import collections
import io
import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_detectron2_pickle", "load_tensor_file", "load_weights_file"]

# What NumPy arrays in a pickle need; vggish_pca_params-970ea276.pth stores its two parameters as
# NumPy arrays, which torch.load(weights_only=True) refuses unless these are allowed.
_NUMPY_SAFE_GLOBALS = [
    np.ndarray,
    np.dtype,
    getattr(np, "_core", np).multiarray._reconstruct,
    *(type(np.dtype(t)) for t in ("float64", "float32")),
]

_MULTIARRAY = getattr(np, "_core", np).multiarray
# What a pickle of a dict of NumPy arrays refers to, under the module names of NumPy 1 and 2.
_PICKLE_GLOBALS = {
    **{
        (module, name): getattr(_MULTIARRAY, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only NumPy arrays are allowed"
            ) from None


def load_detectron2_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a Detectron2 ``.pkl`` file (``{"model": {name: ndarray}, "__author__":
    ..., "matching_heuristics": ...}`` or a bare ``{name: ndarray}``) as tensors, read without
    running pickled code (only NumPy arrays and plain containers are accepted).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a pickle of such a dict; the message names the file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        # latin1: the Python 2 pickles of Detectron2's model zoo store arrays as byte strings.
        content = _ArrayUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
    except Exception as error:  # pickle raises many types for a file that is not one
        raise ValueError(
            f"{path} could not be read as a pickle of NumPy arrays: "
            f"{type(error).__name__}: {str(error)[:300]}"
        ) from error
    weights = content.get("model", content) if isinstance(content, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{path}: expected a dict of arrays (or one under 'model')")
    not_arrays = [k for k, v in weights.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise ValueError(f"{path}: {len(not_arrays)} entries are not arrays: {not_arrays[:5]}")
    return {str(k): torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}


def load_weights_file(path: str | Path, *, allow_numpy: bool = False) -> object:
    """``torch.load(path)`` on CPU with ``weights_only=True``.

    Args:
        path: the file.
        allow_numpy: also accept pickled NumPy arrays (and nothing else beyond tensors).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds something other than plain containers of tensors (or arrays),
            or is not a torch file at all; the message names the file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a state dict
        raise ValueError(
            f"{path} could not be loaded as a plain state dict of tensors "
            f"(torch.load weights_only=True): {type(error).__name__}: {str(error)[:300]}"
        ) from error


def load_tensor_file(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Load a flat tensor-only state dict (``{name: tensor}``), as written by
    ``tools/convert_pretrained_weights.py vggish``.

    Args:
        path: the file.
        what: what the file is, for the error messages (e.g. the config key that names it).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a flat ``{name: tensor}`` dict.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} do not exist")
    state_dict = load_weights_file(path)
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()
    ):
        raise ValueError(
            f"{path} is not a tensor-only state dict ({{name: tensor}}); convert the original "
            "file with tools/convert_pretrained_weights.py"
        )
    return state_dict

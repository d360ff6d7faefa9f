"""tools/build_detectron2.py: patching the v0.6 sources, the wheel's version, what it keeps."""

import hashlib
import importlib.machinery
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import load_tool
from packaging.version import Version
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "build_detectron2.py"

build = load_tool("build_detectron2")

# Excerpts of the pb1-detectron2==0.6 sources, as they are there (enough to patch and to run).
FAKE_SDIST = {
    "detectron2/__init__.py": (
        "from .utils.env import setup_environment\n\nsetup_environment()\n\n__version__ = '0.6'\n"
    ),
    "detectron2/utils/env.py": (
        "import importlib\nimport importlib.util\nimport logging\nimport torch\n\n"
        '__all__ = ["seed_all_rng"]\n'
    ),
    "detectron2/utils/collect_env.py": (
        "def collect_env_info():\n"
        "    has_gpu = torch.cuda.is_available()\n"
        "    from torch.utils.cpp_extension import CUDA_HOME, ROCM_HOME\n"
    ),
    "detectron2/modeling/box_regression.py": (
        "import torch\nfrom detectron2.structures import Boxes\n\n"
        "@torch.jit.script\nclass Box2BoxTransform(object):\n    pass\n\n"
        "@torch.jit.script\nclass Box2BoxTransformRotated(object):\n    pass\n"
    ),
    "detectron2/projects/__init__.py": "import importlib\nfrom pathlib import Path\n",
    "detectron2/data/transforms/transform.py": (
        "from PIL import Image\n\n\nclass ExtentTransform:\n"
        "    def __init__(self, src_rect, output_size, interp=Image.LINEAR, fill=0):\n"
        "        self.interp = interp\n"
    ),
    "detectron2/evaluation/sem_seg_evaluation.py": (
        "import numpy as np\n\n\ndef evaluate(output, gt, conf_matrix, n):\n"
        "    pred = np.array(output, dtype=np.int)\n"
        "    gt = np.array(gt, dtype=np.int)\n"
        "    acc = np.full(n, np.nan, dtype=np.float)\n"
        "    iou = np.full(n, np.nan, dtype=np.float)\n"
        "    tp = conf_matrix.diagonal()[:-1].astype(np.float)\n"
        "    pos_gt = np.sum(conf_matrix[:-1, :-1], axis=0).astype(np.float)\n"
        "    pos_pred = np.sum(conf_matrix[:-1, :-1], axis=1).astype(np.float)\n"
        "    return pred, gt, acc, iou, tp, pos_gt, pos_pred\n"
    ),
    "detectron2/evaluation/pascal_voc_evaluation.py": (
        "difficult = np.array(R).astype(np.bool)\n"
        "# difficult = np.array([False for x in R]).astype(np.bool)\n"
    ),
    "detectron2/structures/masks.py": (
        "a = np.zeros((height, width)).astype(np.bool)\n"
        "b = mask_util.decode(rle).astype(np.bool)\n"
        "c = np.asarray(keep, dtype=np.bool)\n"
    ),
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def patched_tree(tmp_path):
    root = write_tree(tmp_path / "pb1-detectron2-0.6", FAKE_SDIST)
    build.apply_patches(root)
    return root


def test_c_stand_in_answers_collect_env_and_names_missing_ops(patched_tree):
    c_ext = load_module(patched_tree / "detectron2" / "_C.py", "fake_detectron2_C")
    assert c_ext.has_cuda() is False
    assert "not built" in c_ext.get_compiler_version()
    assert "not built" in c_ext.get_cuda_version()
    with pytest.raises(ImportError, match=r"detectron2\._C\.nms_rotated is a compiled"):
        c_ext.nms_rotated  # noqa: B018
    assert not hasattr(c_ext, "__wrapped__")  # dunder probes stay AttributeErrors


def test_patched_sources_run_on_current_pillow_and_numpy(patched_tree):
    original = write_tree(patched_tree.parent / "original", FAKE_SDIST)
    transform = "detectron2/data/transforms/transform.py"
    if not hasattr(Image, "LINEAR"):
        with pytest.raises(AttributeError, match="LINEAR"):
            load_module(original / transform, "unpatched_transform")
    extent = load_module(patched_tree / transform, "patched_transform").ExtentTransform
    assert extent((0, 0, 1, 1), (1, 1)).interp == Image.BILINEAR

    evaluate = load_module(
        patched_tree / "detectron2/evaluation/sem_seg_evaluation.py", "patched_sem_seg"
    ).evaluate
    pred, gt, acc, _, tp, _, _ = evaluate([1, 0], [1, 1], np.eye(3, dtype=np.int64), 2)
    assert pred.dtype.kind == "i" and gt.dtype.kind == "i"
    assert acc.dtype == np.float64 and tp.tolist() == [1.0, 1.0]
    for relative in (
        "detectron2/evaluation/pascal_voc_evaluation.py",
        "detectron2/structures/masks.py",
    ):
        assert "np.bool" not in (patched_tree / relative).read_text()


def test_patches_make_import_order_free_and_scripting_quiet(patched_tree):
    init = (patched_tree / "detectron2/__init__.py").read_text()
    assert "with quiet_torchscript_deprecation():\n    import fvcore.nn" in init
    boxes = (patched_tree / "detectron2/modeling/box_regression.py").read_text()
    assert "@torch.jit.script" not in boxes and boxes.count("@_script_quietly\nclass") == 2
    assert "import importlib.abc" in (patched_tree / "detectron2/projects/__init__.py").read_text()
    collect_env = (patched_tree / "detectron2/utils/collect_env.py").read_text()
    assert "    if has_gpu:\n        from torch.utils.cpp_extension import" in collect_env


def test_quiet_torchscript_deprecation_hides_only_that_warning(patched_tree):
    env = load_module(patched_tree / "detectron2/utils/env.py", "patched_env")
    deprecated = "`torch.jit.script` is deprecated. Please switch to `torch.compile`."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with env.quiet_torchscript_deprecation():
            warnings.warn(deprecated, FutureWarning, stacklevel=1)
            warnings.warn("something else", FutureWarning, stacklevel=1)
        warnings.warn(deprecated, FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else", deprecated]


def test_sources_the_patches_do_not_fit_are_refused(tmp_path):
    changed = dict(FAKE_SDIST)
    changed["detectron2/structures/masks.py"] = "a = np.zeros(3).astype(bool)\n"
    root = write_tree(tmp_path / "changed", changed)
    with pytest.raises(SystemExit, match=r"masks\.py: expected 2 occurrence\(s\).*found 0"):
        build.apply_patches(root)

    missing = {k: v for k, v in FAKE_SDIST.items() if not k.endswith("collect_env.py")}
    with pytest.raises(SystemExit, match=r"collect_env\.py: missing"):
        build.apply_patches(write_tree(tmp_path / "missing", missing))

    with_c = write_tree(tmp_path / "with_c", {**FAKE_SDIST, "detectron2/_C.py": "# real\n"})
    with pytest.raises(SystemExit, match=r"_C\.py: already exists"):
        build.apply_patches(with_c)


def test_wheel_version_names_the_patch_set():
    expected_hash = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:12]
    wheel_version = build.WHEEL_VERSION
    assert wheel_version == f"0.6+avs{expected_hash}"
    version = Version(wheel_version)
    assert version.public == "0.6" and version.local == f"avs{expected_hash}"
    assert build.PROJECT_BUILD_VERSION.fullmatch(build.WHEEL_VERSION)
    assert build.patch_set_version(b"a") != build.patch_set_version(b"b")
    assert "version='0.6+avs" in build.build_recipe(build.WHEEL_VERSION)


def installed(version, compiled=False):
    return build.InstalledDetectron2(Path("/site/detectron2"), version, compiled)


@pytest.mark.parametrize(
    ("present", "force", "install", "reason"),
    [
        (None, False, True, "no Detectron2 installed"),
        (installed("0.6+avs000000000000"), False, True, "older build of this script"),
        (installed("0.6+nocext"), False, True, "older build of this script"),
        (installed("0.6+nocext", compiled=True), False, False, "compiled _C extension"),
        (installed("0.6", compiled=True), False, False, "compiled _C extension"),
        (installed("0.6+cu118torch2.0"), False, False, "not built by this script"),
        (installed("0.7"), False, False, "not built by this script"),
        (installed(None), False, False, "not built by this script"),
        (installed("0.6", compiled=True), True, True, "--force"),
    ],
)
def test_plan_replaces_only_older_project_builds(present, force, install, reason):
    decision, why = build.plan(present, "0.6+avs123456789abc", force)
    assert decision is install
    assert reason in why


def test_plan_keeps_the_current_build():
    current = installed("0.6+avs123456789abc")
    assert build.plan(current, "0.6+avs123456789abc") == (
        False,
        "keeping the Detectron2 at /site/detectron2: it is this script's current build "
        "(0.6+avs123456789abc)",
    )


def test_compiled_extension_is_told_from_the_stand_in(tmp_path):
    package = tmp_path / "detectron2"
    package.mkdir()
    (package / "_C.py").write_text("")
    assert not build.has_compiled_extension(package)
    (package / f"_C{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"\x7fELF")
    assert build.has_compiled_extension(package)


def test_this_environment_needs_no_rebuild():
    """`make setup` installed the wheel of the current patch set (or kept a compiled Detectron2)."""
    present = build.find_installed()
    assert present is not None
    install, why = build.plan(present, build.WHEEL_VERSION)
    assert not install, why

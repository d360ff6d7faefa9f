"""The fidelity checks cannot pass by not running: a missing reference file or a missing native
op fails the test that needs it, with a message naming what is missing."""

import pytest
import torch
from helpers import REFERENCE_DIR, fixture_path, load_fixture
from test_ms_deform_attn import msda, require_compiled


def test_missing_reference_file_fails_naming_it():
    with pytest.raises(pytest.fail.Exception, match=r"'no_such_fixture\.pt' is missing under"):
        fixture_path("no_such_fixture.pt")
    with pytest.raises(pytest.fail.Exception, match=str(REFERENCE_DIR)):
        load_fixture("no_such_fixture.pt")


def test_reference_files_are_found_at_top_level_and_under_fixtures():
    assert fixture_path("AVSegFormer_res50_s4.keys.txt").parent == REFERENCE_DIR
    assert fixture_path("head_tiny.pt").parent == REFERENCE_DIR / "fixtures"


def test_missing_native_op_fails_naming_it(monkeypatch):
    monkeypatch.setattr(msda, "_compiled_unsupported_reason", lambda device, dtype: "not built")
    with pytest.raises(pytest.fail.Exception, match="compiled deformable-attention op.*not built"):
        require_compiled("cpu", torch.float32)

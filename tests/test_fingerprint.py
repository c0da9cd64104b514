"""benchmarks/numerics_fingerprint.py: the check that a change leaves training numerics alone must itself be
deterministic (equal digests for equal code) and sensitive (different digests for different training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "numerics_fingerprint.py"


def _fingerprints(data: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "2", "--data", str(data), *extra],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["fingerprints"]


@pytest.mark.slow
def test_the_numerics_fingerprint_repeats_and_tells_settings_apart(tmp_path):
    first = _fingerprints(tmp_path / "data", "--settings", "demo,demo-noreg")
    assert (tmp_path / "data" / "meta.json").is_file()  # generated once, reused by the second call
    assert _fingerprints(tmp_path / "data", "--settings", "demo") == {"demo": first["demo"]}
    assert first["demo"]["weights_sha256"] != first["demo-noreg"]["weights_sha256"]
    assert first["demo"]["losses_sha256"] != first["demo-noreg"]["losses_sha256"]


@pytest.mark.slow
def test_an_unknown_setting_is_one_line():
    done = subprocess.run([sys.executable, str(SCRIPT), "--settings", "demo,nope"], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.strip() == (
        "unknown setting(s) nope; choose from demo, demo-point, demo-noreg, demo-2d-control, demo-crossview, "
        "demo-crossview-point")

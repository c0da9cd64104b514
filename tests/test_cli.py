"""The real `python -m mtl3dcli` entry point: help texts, --version, and user errors as one line + exit code 2.

Every command runs in a subprocess (so exit codes and stderr are exactly what a user sees); the slow ones, which
import torch, are started together once per module and checked by separate tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mtl3dcli import __version__, fileio

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("download", "preprocess", "train", "evaluate", "predict", "render-views", "study", "export", "presets")


def _env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONPATH=str(REPO))
    env.pop("FORCE_COLOR", None)
    return env


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtl3dcli", *map(str, args)], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    return finish(start(args, cwd))


# --- help and version (no torch import: fast) --------------------------------------------------------------------
HELP_MENTIONS = {
    "download": ["--out", "--url", "--overwrite", "synthetic", "nyuv2", "pascal-context"],
    "preprocess": ["--remap", "--resize", "--out"],
    "train": ["--preset", "--set", "--resume", "--steps", "--tasks", "torchrun"],
    "evaluate": ["--weights", "--data", "--split", "--tasks", "--rendered", "--references", "--out"],
    "predict": ["--weights", "--tasks", "--out", "--format", "png", "npy"],
    "render-views": ["--weights", "--out", "--frames", "--orbit-degrees", "--path", "--size", "orbit", "spiral",
                     "swing"],
    "study": ["--preset", "--seeds", "--variants", "--half-width", "--jobs", "--launcher", "submitit", "--partition"],
    "export": ["--weights", "--out", "--format", "onnx", "--size", "--dynamic", "hf://"],
    "presets": ["preset"],
}


def test_root_help_lists_every_command_and_global_option(tmp_path):
    code, out, err = run(["--help"], tmp_path)
    assert code == 0, err
    for name in (*COMMANDS, "--version", "--debug"):
        assert name in out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_mentions_its_key_options(command, tmp_path):
    code, out, err = run([command, "--help"], tmp_path)
    assert code == 0, err
    for word in HELP_MENTIONS[command]:
        assert word in out, f"{command} --help does not mention {word}"


def test_version(tmp_path):
    code, out, _ = run(["--version"], tmp_path)
    assert code == 0
    assert out.strip() == f"mtl3d {__version__}"


def test_no_arguments_shows_help_not_a_crash(tmp_path):
    code, out, err = run([], tmp_path)
    assert code in (0, 2)
    assert "Usage" in out + err and "Traceback" not in err and "internal error" not in err


def test_missing_required_option_is_a_usage_error(tmp_path):
    code, out, err = run(["predict", "x.png"], tmp_path)
    assert code == 2
    assert "--weights" in err and "Traceback" not in err and "internal error" not in err


# --- user errors: exit code 2, one line ------------------------------------------------------------------------
def invoke(args: list, capsys) -> tuple[int, str, str]:
    """The entry point in this process (torch is already imported here): (exit code, stdout, stderr)."""
    from mtl3dcli import cli

    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["mtl3d", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, culprit: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    assert culprit in lines[0], f"the error should name {culprit!r}: {lines[0]}"
    assert "Traceback" not in err + out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("cli_errors")
    image = work / "photo.png"
    fileio.write_image(image, np.full((20, 30, 3), 128, np.uint8))
    corrupt = work / "corrupt.safetensors"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes())
    foreign = work / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    return {"image": image, "corrupt": corrupt, "foreign": foreign, "absent": work / "absent.safetensors"}


@pytest.mark.slow
def test_unknown_dataset_in_a_subprocess(tmp_path):
    assert_one_line_error(*run(["download", "nosuch", "--out", tmp_path / "d"], tmp_path), "nosuch")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_missing_weights_in_a_subprocess(bad_files, tmp_path):
    code, out, err = run(["predict", bad_files["image"], "--weights", bad_files["absent"]], tmp_path)
    assert_one_line_error(code, out, err, "absent.safetensors")
    assert "not found" in err


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    code, _, err = run(["--debug", "download", "nosuch"], tmp_path)
    assert code != 0
    assert "Traceback" in err and "Mtl3dError" in err and "nosuch" in err


@pytest.mark.parametrize("case", ["preset", "set_key", "host", "study_host", "weights_corrupt", "weights_foreign", "task_unknown",
                                  "task_absent", "size", "size_zero", "split", "study_seeds", "study_rule",
                                  "study_pooled"])
def test_user_error_is_one_line_and_exit_code_2(case, bad_files, tiny_weights, tiny_dataset, tmp_path,
                                                 monkeypatch, capsys):
    image, weights = bad_files["image"], tiny_weights
    cases = {
        "preset": (["train", "--preset", "nosuch"], "nosuch", "unknown preset"),
        "set_key": (["train", "--set", "train.nosuch=1"], "nosuch", "unknown key"),
        "host": (["train", "--set", "model.host=mtinet"], "'mtinet'", "did you mean 'mti-net'?"),
        "study_host": (["study", "--variants", "reg", "--set", "model.host=invtp"], "'invtp'", "did you mean 'invpt'?"),
        "weights_corrupt": (["predict", image, "--weights", bad_files["corrupt"]], "corrupt.safetensors",
                            "not a readable safetensors"),
        "weights_foreign": (["predict", image, "--weights", bad_files["foreign"]], "foreign.safetensors",
                            "not an mtl3d weights file"),
        "task_unknown": (["predict", image, "--weights", weights, "--tasks", "foo"], "foo", "unknown task"),
        "task_absent": (["predict", image, "--weights", weights, "--tasks", "seg,saliency"], "saliency",
                        "no saliency head"),
        "size": (["render-views", image, "--weights", weights, "--size", "12by16"], "12by16", "HEIGHTxWIDTH"),
        "size_zero": (["render-views", image, "--weights", weights, "--size", "0x16"], "0x16", "positive"),
        "split": (["evaluate", "--weights", weights, "--data", tiny_dataset, "--split", "nosuch"], "nosuch",
                  "available: train, val"),
        "study_seeds": (["study", "--seeds", "0"], "got 0", "at least 1 seed"),
        "study_rule": (["study", "--max-seeds", "5"], "--half-width", "applies to a sequential study"),
        "study_pooled": (["study", "--pooled"], "--half-width", "pooled (--pooled) applies to a sequential study"),
    }
    args, culprit, says = cases[case]
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(args, capsys)
    assert_one_line_error(code, out, err, culprit)
    assert says in err
    assert not any(tmp_path.iterdir()), "a failed command must not leave files behind"


# --- bad dataset files: found up front, or by a DataLoader worker mid-run ---------------------------------------
@pytest.fixture
def damaged_dataset(tiny_dataset, tmp_path) -> Path:
    """A copy of the fixture dataset to break."""
    import shutil

    return Path(shutil.copytree(tiny_dataset, tmp_path / "damaged"))


def test_missing_files_are_all_named_before_any_work(damaged_dataset, tiny_weights, tmp_path, monkeypatch, capsys):
    val = (damaged_dataset / "gt_sets" / "val.txt").read_text().split()
    (damaged_dataset / "segmentation" / f"{val[0]}.png").unlink()
    (damaged_dataset / "depth" / f"{val[-1]}.npy").unlink()
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(["evaluate", "--weights", tiny_weights, "--data", damaged_dataset, "--workers", "2",
                             "--out", tmp_path / "m.json"], capsys)
    assert_one_line_error(code, out, err, f"segmentation/{val[0]}.png")
    assert f"depth/{val[-1]}.npy" in err and "2 file(s)" in err
    assert not (tmp_path / "m.json").exists()


def test_corrupt_file_read_by_a_worker_is_one_line(damaged_dataset, tiny_weights, tmp_path, monkeypatch, capsys):
    val = (damaged_dataset / "gt_sets" / "val.txt").read_text().split()
    (damaged_dataset / "depth" / f"{val[0]}.npy").write_bytes(b"not an array")
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(["evaluate", "--weights", tiny_weights, "--data", damaged_dataset, "--workers", "2"],
                            capsys)
    assert_one_line_error(code, out, err, f"{val[0]}.npy")
    assert "worker" not in err and "corrupt" in err


@pytest.mark.slow
def test_corrupt_file_mid_training_saves_the_last_good_state(damaged_dataset, tmp_path, monkeypatch, capsys):
    from conftest import TINY_OVERRIDES

    train_ids = (damaged_dataset / "gt_sets" / "train.txt").read_text().split()
    for sample_id in train_ids:  # every training sample: the first batch hits one whichever the order
        (damaged_dataset / "normals" / f"{sample_id}.png").write_bytes(b"\x89PNG garbage")
    monkeypatch.chdir(tmp_path)
    args = ["train", "--preset", "demo", "--data", damaged_dataset, "--out", tmp_path / "run", "--set",
            "data.workers=2", *[a for o in TINY_OVERRIDES if not o.startswith("data.workers") for a in ("--set", o)]]
    code, out, err = invoke(args, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err + out, err
    assert "normals/" in errors[0] and "last good state saved" in errors[0] and "--resume" in errors[0]
    assert (tmp_path / "run" / "weights" / "last.state.pt").is_file()

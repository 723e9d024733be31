"""Image files of every kind: 16-bit, palette, grey+alpha and CMYK images read at their
range (checked against numpy), and a file that is not a readable image is one line
naming it, before any model work (real processes of the scripts)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convjax.runs.images import read_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_16_bit_grey_reads_at_its_range(tmp_path):
    gradient = np.linspace(0, 65535, 64 * 80).round().astype(np.uint16).reshape(64, 80)
    path = str(tmp_path / "gradient16.png")
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    want = gradient.astype(np.float64) / 65535
    np.testing.assert_allclose(image, np.repeat(want[..., None], 3, -1), atol=1e-6)
    assert abs(image.mean() - 0.5) < 1e-3  # not saturated


def test_palette_grey_alpha_and_cmyk_read_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (16, 20), dtype=np.uint8)
    p = Image.fromarray(index, "P")
    p.putpalette(palette.reshape(-1).tolist())
    p.save(tmp_path / "palette.png")
    np.testing.assert_allclose(
        read_image(str(tmp_path / "palette.png")), palette[index] / 255, atol=1e-6
    )

    grey_alpha = rng.integers(0, 256, (16, 20, 2), dtype=np.uint8)
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    want = np.repeat(grey_alpha[..., :1], 3, -1) / 255
    np.testing.assert_allclose(read_image(str(tmp_path / "la.png")), want, atol=1e-6)

    cmyk = rng.integers(0, 256, (16, 20, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    decoded = np.asarray(Image.open(tmp_path / "cmyk.jpg"), np.float64) / 255  # JPEG's CMYK
    c, k = decoded[..., :3], decoded[..., 3:]
    np.testing.assert_allclose(
        read_image(str(tmp_path / "cmyk.jpg")), (1 - c) * (1 - k), atol=1 / 255 + 1e-6
    )


def bad_files(directory) -> dict[str, str]:
    """name -> the reason read_image gives, for three kinds of unreadable image file."""
    (directory / "empty.png").write_bytes(b"")
    (directory / "notes.png").write_text("a text file named .png\n")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(directory / "whole.png")
    data = (directory / "whole.png").read_bytes()
    (directory / "truncated.png").write_bytes(data[: len(data) // 2])
    return {"empty.png": "the file is empty", "notes.png": "not an image file",
            "truncated.png": "truncated"}  # fmt: skip


@pytest.mark.parametrize("name", ["empty.png", "notes.png", "truncated.png"])
def test_read_image_names_the_file_and_what_is_wrong(tmp_path, name):
    reason = bad_files(tmp_path)[name]
    with pytest.raises(ValueError, match=rf"image '.*{name}' cannot be read: .*{reason}"):
        read_image(str(tmp_path / name))


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_scripts_refuse_a_bad_image_in_one_line_before_model_work(tmp_path):
    """The workdir is empty (nothing to restore): the image's error comes first."""
    reasons = bad_files(tmp_path)
    workdir = str(tmp_path / "no_model_here")
    os.makedirs(workdir)
    runs = {
        "empty.png": script(
            "experiments/detect.py", f"--workdir={workdir}", f"--images={tmp_path / 'empty.png'}"
        )
    }
    runs["notes.png"] = script(
        "experiments/faces.py", "enroll", f"--workdir={workdir}",
        f"--gallery={tmp_path / 'g.npz'}", f"ann={tmp_path / 'notes.png'}",
    )  # fmt: skip
    runs["truncated.png"] = script(
        "experiments/faces.py", "verify", f"--workdir={workdir}",
        str(tmp_path / "whole.png"), str(tmp_path / "truncated.png"),
    )  # fmt: skip
    for name, run in runs.items():
        output = run.stdout + run.stderr
        assert run.returncode == 1, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, output[-3000:]
        assert f"{tmp_path / name}' cannot be read" in errors[0] and reasons[name] in errors[0]

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mimocli.cli import app
from mimocli.images import read_image, write_image

from .conftest import digest, photo

runner = CliRunner()


def _default_sigint() -> None:
    """A child of a shell's background job starts with SIGINT ignored; give it back Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def flat(text: str) -> str:
    """Typer draws usage errors in a box; join its wrapped lines back into one."""
    return " ".join(text.replace("│", " ").split())


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def pics(tmp_path) -> Path:
    d = tmp_path / "pics"
    d.mkdir()
    write_image(d / "a.png", photo(40, 52))
    write_image(d / "b.jpg", photo(36, 44, seed=1))
    (d / "sub").mkdir()
    write_image(d / "sub" / "c.png", photo(24, 28, dtype=np.uint16))
    return d


def test_deblur_beside_input(pics, tiny_weights):
    r = run("deblur", pics / "a.png", "-w", tiny_weights, "--quiet")
    assert r.exit_code == 0, r.output
    out = pics / "a_deblurred.png"
    assert r.stdout.strip() == str(out)
    assert read_image(out).pixels.shape == (40, 52, 3)


def test_folder_recursive_into_output_dir_with_scales_and_json(pics, tiny_weights, tmp_path):
    dest = tmp_path / "out"
    r = run("deblur", pics, "-r", "-o", dest, "-w", tiny_weights, "--save-scales", "--json")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(x["input"]).name for x in records] == ["a.png", "b.jpg", "c.png"]
    assert all(x["status"] == "ok" for x in records)
    assert (dest / "sub" / "c_deblurred.png").exists()
    assert read_image(dest / "sub" / "c_deblurred.png").pixels.dtype == np.uint16
    assert read_image(dest / "a_deblurred_x0.5.png").pixels.shape == (20, 26, 3)
    assert read_image(dest / "a_deblurred_x0.25.png").pixels.shape == (10, 13, 3)
    assert Path(records[1]["scales"]["0.25"]).name == "b_deblurred_x0.25.png"
    # Without --recursive the subfolder is left alone; earlier results are never inputs.
    r = run("deblur", pics, "-w", tiny_weights, "--json")
    names = [Path(json.loads(line)["input"]).name for line in r.stdout.splitlines()]
    assert names == ["a.png", "b.jpg"]
    r = run("deblur", pics, "-w", tiny_weights, "--json", "--skip-existing")
    assert {json.loads(line)["status"] for line in r.stdout.splitlines()} == {"skipped"}


def test_single_output_file_and_glob(pics, tiny_weights, tmp_path):
    r = run("deblur", pics / "a.png", "-o", tmp_path / "x.webp", "-w", tiny_weights, "--quality", "100")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "x.webp").format == "WEBP"
    r = run("deblur", str(pics / "*.png"), str(pics / "*.jpg"), "-o", tmp_path / "g", "-w", tiny_weights)
    assert r.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["a_deblurred.png", "b_deblurred.jpg"]
    r = run("deblur", pics / "a.png", pics / "b.jpg", "-o", tmp_path / "y.png", "-w", tiny_weights)
    assert r.exit_code == 2 and "is a file name" in flat(r.output)


def test_existing_outputs_and_inputs_are_protected(pics, tiny_weights):
    assert run("deblur", pics / "a.png", "-w", tiny_weights).exit_code == 0
    out = pics / "a_deblurred.png"
    before = digest(out)
    r = run("deblur", pics / "a.png", "-w", tiny_weights)
    assert r.exit_code == 1 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert digest(out) == before
    assert run("deblur", pics / "a.png", "-w", tiny_weights, "--overwrite").exit_code == 0
    original = digest(pics / "b.jpg")
    r = run("deblur", pics / "a.png", pics / "b.jpg", "-o", pics, "-w", tiny_weights, "--overwrite")
    assert r.exit_code == 0
    r = run("deblur", pics / "a.png", "-o", pics / "a.png", "-w", tiny_weights, "--overwrite")
    assert r.exit_code == 1 and "is an input" in r.stderr
    assert digest(pics / "b.jpg") == original
    r = run("deblur", pics / "a.png", "--overwrite", "--skip-existing", "-w", tiny_weights)
    assert r.exit_code == 2


def test_bad_inputs_reported_others_processed(pics, tiny_weights, tmp_path):
    (pics / "broken.png").write_bytes((pics / "a.png").read_bytes()[:200])
    (pics / "empty.jpg").write_bytes(b"")
    (pics / "notes.png").write_text("hello")
    write_image(pics / "huge.png", photo(120, 120))
    r = run("deblur", pics, tmp_path / "missing.png", "-w", tiny_weights, "--max-pixels", "10000", "-o", tmp_path / "o")
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 5, r.stderr
    assert any("broken.png: truncated or corrupt" in e for e in errors)
    assert any("empty.jpg: empty file" in e for e in errors)
    assert any("notes.png: not an image" in e for e in errors)
    assert any("huge.png" in e and "--max-pixels" in e for e in errors)
    assert any("missing.png: no such file" in e for e in errors)
    assert "Traceback" not in r.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_deblurred.png", "b_deblurred.jpg"]


def test_unwritable_output_folder(pics, tiny_weights, tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "sub"  # a folder under a regular file cannot exist, even for root
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    r = run("deblur", pics / "a.png", "-o", target, "-w", tiny_weights)
    assert r.exit_code == 1 and "Error:" in r.stderr and "Traceback" not in r.output


def test_usage_errors_exit_2(pics, tiny_weights):
    assert run("deblur", pics / "a.png", "--tile", "big").exit_code == 2
    assert run("deblur", pics / "a.png", "--precision", "int4").exit_code == 2
    assert run("deblur").exit_code == 2
    r = run("deblur", pics / "a.png", "--variant", "nope", "-w", tiny_weights)
    assert r.exit_code == 2 and "unknown variant 'nope'" in flat(r.stderr)
    for args in (
        ["video", "a.mp4", "b.mp4", "-m", "nope"],
        ["bench", "-m", "nope"],
        ["weights", "import", "x", "--as", "x"],
    ):
        r = run(*args)
        assert r.exit_code == 2 and "unknown variant" in flat(r.stderr), args
    r = run("deblur", pics / "a.png", "-o", pics / "a.gif", "-w", tiny_weights)
    assert r.exit_code == 1 and "cannot write .gif" in r.stderr


def test_offline_error_is_one_line(pics, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run("deblur", pics / "a.png", "--variant", "plus")  # asked for by name: no stand-in
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "mimo weights download mimo-unet-plus" in r.stderr and "Traceback" not in r.output


def test_tiles_ensemble_and_precision_flags(pics, tiny_weights, tmp_path):
    r = run(
        "deblur",
        pics / "a.png",
        "-o",
        tmp_path / "t.png",
        "-w",
        tiny_weights,
        "--tile",
        "16",
        "--tile-overlap",
        "8",
        "--ensemble",
        "--precision",
        "bf16",
        "--device",
        "cpu",
        "--json",
    )
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["tiles"] > 1 and record["tile"] == 16 and record["precision"] == "bf16"  # what ran
    auto = json.loads(run("deblur", pics / "a.png", "-o", pics / "auto.png", "-w", tiny_weights, "--json").stdout)
    assert auto["precision"] == "fp32" and auto["tile"] == 0  # auto on a CPU without bf16: fp32, whole


def test_weights_commands(tmp_path, tiny_weights):
    import torch

    from mimocli.arch import MIMOUNet

    r = run("weights", "list", "--json")
    rows = json.loads(r.stdout)
    names = [x["name"] for x in rows]
    assert names == ["mimo-unet", "mimo-unet-plus", "mimo-unet-plus-realblur", "mimo-unet-lite", "xydeblur"]
    assert not any(x["cached"] for x in rows if not x["bundled"])
    ckpt = tmp_path / "MIMO-UNet.pkl"
    torch.save({"model": MIMOUNet(8).state_dict()}, ckpt)
    # A file of unknown origin is kept apart: it never takes the slot of the authors' weights.
    r = run("weights", "import", ckpt)
    assert r.exit_code == 0, r.output
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert Path(r.stdout.strip()).name == f"MIMO-UNet-{digest[:12]}.safetensors"
    assert "mimo-unet (MIMO-UNet with 8 blocks of 32 channels), kept apart" in r.stderr
    rows = json.loads(run("weights", "list", "--json").stdout)
    assert not rows[0]["cached"]
    mine = rows[-1]
    assert mine["name"] == f"imported/MIMO-UNet-{digest[:12]}" and mine["source"] == str(ckpt.resolve())
    assert mine["sha256"] == hashlib.sha256(Path(mine["path"]).read_bytes()).hexdigest()
    # Told which slot, it takes it.
    r = run("weights", "import", ckpt, "--as", "base")
    assert r.exit_code == 0 and r.stdout.strip().endswith("mimo-unet.safetensors") and "now the mimo-unet" in r.stderr
    rows = json.loads(run("weights", "list", "--json").stdout)
    assert rows[0]["cached"] and rows[0]["size"] > 27_000_000 and rows[0]["source"] == str(ckpt.resolve())
    assert "mimo-unet" in run("weights", "list").stdout
    assert all(x["intact"] for x in rows if x["cached"])
    # A damaged file is listed as such, with the fix that fits where it came from.
    for row in (rows[0], rows[-1]):
        data = bytearray(Path(row["path"]).read_bytes())
        data[-5] ^= 0xFF
        Path(row["path"]).write_bytes(bytes(data))
    rows = json.loads(run("weights", "list", "--json").stdout)
    assert rows[0]["intact"] is False and rows[-1]["intact"] is False and rows[3]["intact"] is True  # lite: intact
    assert flat(run("weights", "list").stdout).count("damaged") == 2
    from mimocli.errors import IntegrityError
    from mimocli.weights import verify_cached

    with pytest.raises(IntegrityError) as e:
        verify_cached(Path(rows[-1]["path"]))  # an imported file: nothing to download
    assert "import the file again (mimo weights import" in e.value.hint and "download" not in e.value.hint
    r = run("weights", "import", tmp_path / "nothing.pkl")
    assert r.exit_code == 1 and "no such weights file" in r.stderr
    r = run("weights", "download", "nope")
    assert r.exit_code == 2 and "unknown variant" in flat(r.stderr)


def test_real_subprocess(pics, tiny_weights, tmp_path):
    env = {**os.environ, "MIMO_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "deblur", str(pics / "a.png"), "-w", str(tiny_weights), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok"
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "deblur", str(tmp_path / "none.png"), "-w", str(tiny_weights)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and "none.png: no such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert subprocess.run(
        [sys.executable, "-m", "mimocli", "--version"], capture_output=True, text=True
    ).stdout.startswith("mimo ")


def test_variant_that_does_not_fit_the_weights_warns(pics, tiny_weights):
    r = run("deblur", pics / "a.png", "-w", tiny_weights, "--variant", "base")
    assert r.exit_code == 0 and "1 blocks of 32 channels, not mimo-unet" in r.stderr
    r = run("deblur", pics / "b.jpg", "-w", tiny_weights)
    assert r.exit_code == 0 and "Warning" not in r.stderr


def test_interrupted_run_leaves_no_partial_output(tmp_path, tiny_weights):
    """Ctrl-C in the middle of a long run: no file under the output name, no temporary left."""
    import signal
    import time

    big = write_image(tmp_path / "big.png", photo(1024, 1536))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimocli", "deblur", str(big), "-w", str(tiny_weights), "--tile", "64", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    time.sleep(4)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["big.png", "tiny.safetensors"]


@pytest.mark.shared
def test_real_photos_with_upstream_keyed_weights(shared, tmp_path):
    """Real files from ../shared: odd height (429) and an RGBA PNG; weights in upstream layout."""
    weights = shared / "reference" / "mimo_unet_random.safetensors"
    inputs = [
        shared / "data/photos/gc_motion0065.png",
        shared / "data/pairs/gopro_crop256_000008/blur.png",
    ]
    r = run("deblur", *inputs, "-o", tmp_path, "-w", weights, "--json", "--save-scales", "--tile", "256")
    assert r.exit_code == 0, r.output
    for src, line in zip(inputs, r.stdout.splitlines(), strict=True):
        rec = json.loads(line)
        before, after = read_image(src).pixels, read_image(rec["output"]).pixels
        assert after.shape == before.shape and after.dtype == before.dtype
        if before.shape[2] == 4:
            assert np.array_equal(after[:, :, 3], before[:, :, 3])
        assert read_image(rec["scales"]["0.25"]).pixels.shape[:2] == (
            -(-before.shape[0] // 4),
            -(-before.shape[1] // 4),
        )


def test_compare_writes_input_and_output_side_by_side(pics, tiny_weights, tmp_path):
    r = run("deblur", pics / "a.png", pics / "b.jpg", "-w", tiny_weights, "--compare", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(x["compare"]).name for x in records] == ["a_compare.png", "b_compare.jpg"]
    assert all(x["weights"]["name"] == str(tiny_weights) and len(x["weights"]["sha256"]) == 64 for x in records)
    both = read_image(pics / "a_compare.png").pixels
    out = read_image(pics / "a_deblurred.png").pixels
    src = read_image(pics / "a.png").pixels
    assert both.shape == (40, 52 * 2 + 4, 3)
    # below the label bands, the halves are the input and the output, untouched
    assert np.array_equal(both[30:, :52], src[30:]) and np.array_equal(both[30:, 56:], out[30:])
    # a rerun of the folder neither deblurs the comparison nor overwrites it unasked
    r = run("deblur", pics, "-w", tiny_weights, "--compare", "--overwrite", "--json", "--quiet")
    assert r.exit_code == 0 and all("_compare" not in Path(json.loads(x)["input"]).name for x in r.stdout.splitlines())
    (pics / "a_deblurred.png").unlink()
    r = run("deblur", pics / "a.png", "-w", tiny_weights, "--compare")
    assert r.exit_code == 1 and "a_compare.png: already exists" in flat(r.stderr)
    r = run("deblur", pics / "a.png", "-o", tmp_path / "single.png", "-w", tiny_weights, "--compare", "--quiet")
    assert r.exit_code == 0 and (tmp_path / "single_compare.png").exists()


def test_paths_with_brackets_are_printed_verbatim(tmp_path, tiny_weights):
    """Rich markup would read "[final]" as a style tag and print "shot_deblurred.png"."""
    src = write_image(tmp_path / "shot[final].png", photo(24, 28))
    r = run("deblur", src, "-w", tiny_weights, "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp_path / "shot[final]_deblurred.png")
    assert (tmp_path / "shot[final]_deblurred.png").exists()
    (tmp_path / "notes[draft].png").write_text("not an image")
    r = run("deblur", tmp_path / "notes[draft].png", "-w", tiny_weights)
    assert r.exit_code == 1 and "notes[draft].png: not an image" in r.stderr


def test_help_and_version_never_import_torch_pyav_or_opencv(tmp_path):
    """`mimo --help` answered in 4 s when it imported torch; with stand-ins that refuse to be
    imported, every help page must still print."""
    for name in ("torch", "av", "cv2", "safetensors", "huggingface_hub", "gdown"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} imported for --help')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    commands = [["--version"], ["--help"]] + [
        [*c, "--help"] for c in (["deblur"], ["video"], ["bench"], ["eval"], ["synth"], ["train"], ["weights", "list"])
    ]
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-m", "mimocli", *args], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, (args, done.stderr)
        assert "Usage" in done.stdout or done.stdout.startswith("mimo ")
    done = subprocess.run(
        [sys.executable, "-c", "import mimocli; print(mimocli.__version__, len(mimocli.__all__))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_shell_completion_completes_commands_and_options():
    mimo = str(Path(sys.executable).with_name("mimo"))  # the installed script, as a shell runs it
    env = {**os.environ, "_MIMO_COMPLETE": "complete_bash", "COMP_WORDS": "mimo de", "COMP_CWORD": "1"}
    done = subprocess.run([mimo], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.split() == ["deblur"], done.stderr
    env.update(COMP_WORDS="mimo video --co", COMP_CWORD="2")
    done = subprocess.run([mimo], capture_output=True, text=True, env=env, timeout=60)
    assert set(done.stdout.split()) == {"--compile", "--codec"}
    # The shell named, not detected from the parent processes (which depend on how pytest was started).
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([mimo, "--show-completion", "bash"], capture_output=True, text=True, env=env, timeout=60)
    assert "_mimo_completion" in done.stdout, (done.returncode, done.stderr[-2000:])


def test_nothing_to_do_fails_at_once_without_torch(tmp_path):
    """Inputs that cannot even be tried are refused before torch is imported or weights loaded:
    here torch cannot be imported at all, and the error is still one clean line."""
    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    args = [sys.executable, "-m", "mimocli", "deblur", str(tmp_path / "missing.jpg"), str(tmp_path / "none*.png")]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "missing.jpg: no such file" in done.stderr and "none*.png: no file matches this pattern" in done.stderr


def test_weights_list_needs_no_torch(tmp_path):
    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "weights", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert any(row["name"] == "mimo-unet-lite" and row["intact"] for row in json.loads(done.stdout))


def test_video_refuses_before_loading_any_weights(tmp_path):
    from .clips import make_clip

    no_weights = tmp_path / "none.safetensors"  # loading it would be the error, were it loaded first
    r = run("video", tmp_path / "missing.mp4", tmp_path / "out.mp4", "-w", no_weights)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "missing.mp4: no such file" in r.stderr
    clip = make_clip(tmp_path / "in.mp4", frames=6)
    r = run("video", clip, tmp_path / "out.mp4", "--start", "10", "-w", no_weights)
    assert r.exit_code == 1 and "--start 10 s is at or past the end" in r.stderr and "weights" not in r.stderr


def test_an_output_folder_that_cannot_be_written_is_found_before_any_work(tmp_path, tiny_weights, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: Path(p) != locked and real(p, mode, **kw)
    )  # as for a non-root user
    src = write_image(tmp_path / "a.png", photo(16, 16))
    r = run("deblur", src, "-o", locked, "-w", tiny_weights, "--json")
    assert r.exit_code == 1 and f"the folder {locked} is not writable" in r.stderr
    assert json.loads(r.stdout)["status"] == "failed" and "seconds" not in r.stdout  # refused, not deblurred
    from .clips import make_clip

    clip = make_clip(tmp_path / "in.mp4", frames=6)
    r = run("video", clip, locked / "out.mp4", "-w", tmp_path / "none.safetensors")
    assert r.exit_code == 1 and "is not writable" in r.stderr


def test_every_command_lists_every_variant_and_says_the_default():
    for command in ("deblur", "video", "eval", "serve"):
        r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        text = flat(r.stdout)
        assert "mimo-unet-lite (lite; bundled, works offline)" in text and "xydeblur (xy)" in text, command
        assert "Default: mimo-unet-plus, or mimo-unet-lite where that cannot be had" in text, command


def test_on_a_terminal_the_bar_reads_right_and_results_go_above_it(tmp_path, tiny_weights):
    """A real pseudo-terminal for stdout and stderr, as a shell gives: the bar's markup is drawn,
    not printed, and each result line clears the bar's line first instead of landing inside it."""
    import pty

    src = write_image(tmp_path / "shot[final].png", photo(48, 64))
    mimo = str(Path(sys.executable).with_name("mimo"))
    main, child = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    args = [mimo, "deblur", str(src), "-w", str(tiny_weights), "--compare", "--device", "cpu"]
    proc = subprocess.Popen(args, stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(main)
    text = b"".join(chunks).decode(errors="replace")
    assert "[progress.description]" not in text and "[bold]" not in text
    assert "\x1b[1mshot[final].png" in text  # the file's name in bold, verbatim
    for path in (tmp_path / "shot[final]_deblurred.png", tmp_path / "shot[final]_compare.png"):
        assert f"\x1b[2K{path}" in text  # on a line of its own, the bar cleared first


def test_off_a_terminal_progress_is_a_plain_line_now_and_then(tmp_path):
    """Under nohup, docker or CI a bar cannot be drawn; a long run must still say how far it is."""
    from .clips import make_clip, small_weights

    clip = make_clip(tmp_path / "in.mp4", frames=24, size=(192, 144), audio=None)
    weights = small_weights(tmp_path / "w.safetensors", width=32)
    env = {**os.environ, "MIMO_PROGRESS_SECONDS": "0.1"}
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "video", clip, tmp_path / "out.mp4", "-w", weights, "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("in.mp4: ")]
    assert lines, done.stderr
    assert re.fullmatch(r"in\.mp4: \d+/24(, [\d.]+ frame/s|, [\d.]+ s/frame)?(, \d+:\d\d left)?", lines[-1]), lines
    assert len(set(lines)) == len(lines)  # a line only when something moved
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "video", clip, tmp_path / "o2.mp4", "-w", weights, "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0 and done.stderr == ""


def test_ctrl_c_says_what_was_done_and_how_to_go_on(tmp_path):
    from .clips import small_weights
    from .conftest import interrupt_when

    weights = small_weights(tmp_path / "w.safetensors", width=32)
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(40):
        write_image(pics / f"p{i:02d}.png", photo(192, 256, seed=i))
    args = [sys.executable, "-m", "mimocli", "deblur", str(pics), "-o", str(tmp_path / "out"), "-w", str(weights)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "out"
    stderr = interrupt_when(proc, lambda: out.is_dir() and any(out.glob("*_deblurred.png")))
    assert proc.returncode == 130, stderr
    assert "Interrupted: " in stderr and "of 40 file(s) done" in stderr and "--skip-existing" in stderr
    assert "Traceback" not in stderr
    assert not [p for p in (tmp_path / "out").iterdir() if not p.name.endswith("_deblurred.png")]  # no parts left


def test_a_symlink_loop_among_inputs_is_one_line_and_the_batch_goes_on(tmp_path, tiny_weights):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    src = write_image(tmp_path / "ok.png", photo(16, 16))
    r = run("deblur", tmp_path / "a", src, "-o", tmp_path / "out", "-w", tiny_weights, "--json")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "points back to itself (fix or remove the link)" in flat(r.stderr)
    statuses = {Path(json.loads(line)["input"]).name: json.loads(line)["status"] for line in r.stdout.splitlines()}
    assert statuses == {"a": "failed", "ok.png": "ok"}


def test_plain_progress_lines_read_as_people_write():
    from rich.progress import Progress

    from mimocli.cli.console import plain_status

    p = Progress()
    big = p.add_task("frames", total=27270500)
    p.update(big, completed=13631488)
    assert plain_status(p.tasks[0]) == "frames: 13631488/27270500"  # not 1.36315e+07/2.72705e+07
    download = p.add_task("weights", total=27270500, unit="bytes")
    p.update(download, completed=13631488)
    assert plain_status(p.tasks[1]) == "weights: 13.6/27.3 MB"
    unknown = p.add_task("weights", total=None, unit="bytes")
    p.update(unknown, completed=1200)
    assert plain_status(p.tasks[2]) == "weights: 1.2 kB"


def test_the_bar_shows_the_rate_as_tqdm_does_and_the_time_left():
    """Photos a second while fast, seconds a photo once slower than one a second (tqdm's rule),
    and the time left, read from a clock the test moves; off a terminal the same in plain words."""
    from rich.progress import Progress, TimeRemainingColumn

    from mimocli.cli.console import RateColumn, plain_status

    now = [0.0]
    p = Progress(RateColumn(), TimeRemainingColumn(), get_time=lambda: now[0])
    task = p.add_task("files", total=10, unit="photo")
    rate, left = (c.render(p.tasks[0]).plain for c in p.columns)
    assert rate == "-- photo/s" and left == "-:--:--"
    for _ in range(3):  # a photo every 4 s
        now[0] += 4.0
        p.advance(task)
    rate, left = (c.render(p.tasks[0]).plain for c in p.columns)
    assert rate == "4.0 s/photo" and left == "0:00:28"  # 7 more at 4 s each
    fast = p.add_task("tiles", total=100, unit="tile")
    for _ in range(4):
        now[0] += 0.4
        p.advance(fast, 1)
    assert p.columns[0].render(p.tasks[1]).plain == "2.50 tile/s"
    assert plain_status(p.tasks[0]) == "files: 3/10, 4.0 s/photo, 0:28 left"


def test_env_says_what_a_bug_report_needs(tmp_path):
    import av
    import torch

    import mimocli

    r = run("env", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["mimocli"] == mimocli.__version__ and info["torch"]["version"] == torch.__version__
    assert info["pyav"] == av.__version__ and info["encoders"]["libx264"] is True
    assert isinstance(info["torch"]["cpu_native_bf16"], bool) and info["cpu_count"] >= 1
    assert any(w["name"] == "mimo-unet-lite" and len(w["sha256"]) == 64 for w in info["weights"])
    text = run("env").stdout
    assert f"torch {torch.__version__}" in text and "weights cache: " in text and "mimo-unet-lite" in text


def test_mimo_lets_waiting_threads_sleep_unless_told_otherwise():
    """OpenMP threads that spin while they wait take the cores from the one holding the work
    when other processes want them too (benchmarks/contention.py): mimo sets PASSIVE before
    torch loads, and a policy the user set stays."""
    mimo = str(Path(sys.executable).with_name("mimo"))
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([mimo, "env", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["torch"]["omp_wait_policy"] == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    done = subprocess.run([mimo, "env", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(done.stdout)["torch"]["omp_wait_policy"] == "ACTIVE"


def test_verbose_says_device_precision_tile_and_weights(pics, tiny_weights):
    import hashlib

    r = run(
        "deblur", pics / "a.png", "-w", tiny_weights, "-v", "--tile", "32", "--device", "cpu", "--precision", "fp32"
    )
    assert r.exit_code == 0, r.output
    sha = hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert f"weights: {tiny_weights}, sha256 {sha}, MIMO-UNet with 1 blocks of 32 channels" in r.stderr
    assert "device: cpu, precision: fp32" in r.stderr and "tile: 32 px" in r.stderr
    assert re.search(r"a\.png: 52x40, \d+ tiles of 32 px, [\d.]+ s", r.stderr)
    assert "device:" not in run("deblur", pics / "b.jpg", "-w", tiny_weights).stderr


def test_dry_run_says_what_would_happen_and_touches_nothing(pics, tmp_path):
    write_image(pics / "a_deblurred.png", photo(8, 8))  # exists: skipped with --skip-existing
    before = sorted(p.name for p in pics.rglob("*"))
    missing_weights = tmp_path / "none.safetensors"  # never loaded by a dry run
    r = run("deblur", pics, tmp_path / "nope.png", "--dry-run", "--skip-existing", "-w", missing_weights)
    assert r.exit_code == 1  # something would fail
    assert f"{pics / 'b.jpg'} -> {pics / 'b_deblurred.jpg'}" in r.stdout
    assert f"{pics / 'a.png'} skipped: {pics / 'a_deblurred.png'} exists" in r.stdout
    assert "nope.png: no such file" in r.stderr
    r = run("deblur", pics / "b.jpg", "--dry-run", "--json", "--save-scales", "-w", missing_weights)
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["status"] == "would-write" and len(record["writes"]) == 3
    assert sorted(p.name for p in pics.rglob("*")) == before


def test_video_dry_run(tmp_path):
    from .clips import make_clip

    clip = make_clip(tmp_path / "in.mp4", frames=6, audio="aac")
    r = run("video", clip, tmp_path / "out.mkv", "--dry-run", "--save-scales", "-w", tmp_path / "none.safetensors")
    assert r.exit_code == 0, r.output
    assert f"{clip}: 64x48 yuv420p, 6 frames at 24.000 fps -> {tmp_path / 'out.mkv'}: libx264 yuv420p" in r.stdout
    assert "and " + str(tmp_path / "out_x0.5.mkv") in r.stdout and "1 other stream(s) copied" in r.stdout
    (tmp_path / "taken.mp4").write_bytes(b"x")
    r = run("video", clip, tmp_path / "taken.mp4", "--dry-run")
    assert r.exit_code == 1 and "already exists" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "taken.mp4"]

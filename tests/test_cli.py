"""The front door: one-line errors for user mistakes, translate on real photos."""

import pytest
import torch
from PIL import Image

from scenimefy.commands.cli import main
from scenimefy.data.decode import list_image_files
from scenimefy.inference.translate import save_translator_snapshot
from scenimefy.models.translator import ResnetGenerator


def _one_line_error(capsys, code, expected):
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err
    return err


def test_unknown_config_key_is_one_line(capsys):
    code = main(["train", "--config", "tiny", "translator.lamda_style=0.1"])
    _one_line_error(capsys, code, "unknown config key 'translator.lamda_style'")


def test_missing_data_folder_fails_before_starting_ray(capsys, tmp_path):
    code = main(["train", "--config", "tiny", f"data.photos={tmp_path / 'nope'}", f"run.output_dir={tmp_path}"])
    _one_line_error(capsys, code, "photos folder")
    assert not (tmp_path / "ray").exists()


def test_empty_data_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    code = main(["train", "--config", "tiny", f"data.photos={tmp_path / 'empty'}"])
    _one_line_error(capsys, code, "holds no images")


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["train", "--config", "tiny", "--dry-run", "translator.lambda_src=0.2"]) == 0
    out = capsys.readouterr().out
    assert "lambda_src: 0.2" in out and "# world size: 2" in out


@pytest.fixture
def tiny_snapshot(tmp_path):
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=8, n_blocks=2)
    path = tmp_path / "generator.pt"
    save_translator_snapshot(path, G, {"translator": {"ngf": 8, "n_blocks": 2}})
    return path


def test_translate_real_photos_keeps_sizes_and_names(tmp_path, tiny_snapshot, photos_dir, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "translate",
            "--checkpoint",
            str(tiny_snapshot),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-side",
            "160",
            str(photos_dir),
        ]
    )
    assert code == 0
    inputs = list_image_files(str(photos_dir))
    outputs = sorted(p.name for p in out.rglob("*.png"))
    assert outputs == sorted(p.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".png" for p in inputs)
    for src in inputs:
        w, h = Image.open(src).size
        scale = min(1.0, 160 / max(w, h))
        got = Image.open(out / (src.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".png")).size
        assert abs(got[0] - w * scale) <= 1 and abs(got[1] - h * scale) <= 1
    assert f"translated {len(inputs)} image(s)" in capsys.readouterr().out


def test_translate_with_wrong_architecture_names_the_keys(tmp_path, capsys, photos_dir):
    bad = tmp_path / "bad.pth"
    torch.save({"model.1.weight": torch.zeros(8, 3, 7, 7)}, bad)
    code = main(["translate", "--checkpoint", str(bad), "--out", str(tmp_path / "o"), str(photos_dir)])
    err = _one_line_error(capsys, code, str(bad))
    assert "model." in err


def test_translate_missing_checkpoint(tmp_path, capsys, photos_dir):
    code = main(["translate", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o"), str(photos_dir)])
    _one_line_error(capsys, code, "none.pt")


def _translate(tmp_path, snapshot, *inputs):
    out = tmp_path / "out"
    argv = ["translate", "--checkpoint", str(snapshot), "--out", str(out), "--device", "cpu", "--batch-size", "2"]
    return main([*argv, *map(str, inputs)]), out


def test_translate_an_empty_folder_says_it_has_no_images(tmp_path, tiny_snapshot, capsys):
    (tmp_path / "empty").mkdir()
    code, out = _translate(tmp_path, tiny_snapshot, tmp_path / "empty")
    captured = capsys.readouterr()
    assert code == 1 and not out.exists()
    assert f"skipped {tmp_path / 'empty'}: no images in this folder or below (looked for .jpg" in captured.err
    assert captured.out == "no image translated, nothing written; skipped 1 input(s), listed above\n"
    assert str(out) not in captured.out + captured.err  # no folder that was never made


def test_translate_names_each_renamed_input_and_prints_each_message_once(tmp_path, tiny_snapshot, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (24, 16), (200, 10, 10)).save(photos / "a.jpg")
    Image.new("RGB", (24, 16), (10, 200, 10)).save(photos / "a.png")
    (photos / "notes.txt").write_text("not an image")
    code, out = _translate(tmp_path, tiny_snapshot, photos)
    captured = capsys.readouterr()
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["a.png", "a_1.png"]
    assert captured.out.splitlines() == [
        f"translated 2 image(s) into {out}; skipped 1 input(s), listed above",
        "1 input(s) share a name with an earlier one and were renamed:",
        f"  {photos / 'a.png'} -> {out / 'a_1.png'}, since {photos / 'a.jpg'} has that name",
    ]
    lines = (captured.out + captured.err).splitlines()
    assert sum("notes.txt" in line for line in lines) == 1  # said once, on stderr
    assert all(lines.count(line) == 1 for line in lines if line.strip())


def test_translate_a_file_that_is_not_a_checkpoint(tmp_path, capsys, photos_dir):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    code = main(["translate", "--checkpoint", str(photo), "--out", str(tmp_path / "o"), str(photos_dir)])
    err = _one_line_error(capsys, code, f"{photo} is not a checkpoint: it is not a PyTorch weights file")
    assert "weights_only" not in err and "generator.pt" in err

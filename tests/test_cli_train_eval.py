import json

import numpy as np
import pytest
import tifffile
import torch
from skimage import io as skio

from napari_unet.cli import main
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.model.checkpoint import load_model, save_model
from napari_unet.core.model.unet import UNet
from napari_unet.core.training.trainer import Trainer


@pytest.fixture
def data(tmp_path):
    image, labels = synthetic_nuclei((64, 64), seed=5)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels.astype(np.uint16))
    torch.manual_seed(0)
    save_model(tmp_path / "tiny.pt", UNet(1, 2, base_channels=4, depth=2), {})
    return tmp_path


def train_args(d, *extra):
    return ["train", "--image", str(d / "img.tif"), "--labels", str(d / "lab.tif"),
            "--model", str(d / "tiny.pt"), "--iterations", "3", "--tile", "32",
            "--batch-size", "2", "--validate-every", "2", "--device", "cpu",
            "--validation-fraction", "0.25", *extra]


def test_train_then_eval(data, capsys):
    out = data / "trained.pt"
    assert main(train_args(data, "--out", str(out))) == 0
    model, meta = load_model(out)
    assert meta.step == 3 and meta.mode == "instances"
    assert meta.training["iterations"] == 3 and meta.training["tile_size"] == 32
    assert model.config["base_channels"] == 4
    for png in ("trained_curves.png", "trained_overlay.png"):
        assert skio.imread(data / png).ndim == 3
    capsys.readouterr()
    code = main(["eval", "--model", str(out), "--image", str(data / "img.tif"),
                 "--labels", str(data / "lab.tif"), "--device", "cpu", "--json",
                 str(data / "scores.json")])
    assert code == 0
    text = capsys.readouterr().out
    for title in ("IoU", "Dice", "AP@0.5", "AP@0.75", "split rate"):
        assert title in text
    scores = json.loads((data / "scores.json").read_text())
    assert 0 <= scores["pooled"]["iou"] <= 1
    assert scores["pooled"]["n_gt"] == int(tifffile.imread(data / "lab.tif").max())


def test_perfect_model_scores_one(data, tmp_path, capsys, monkeypatch):
    # eval compares with the ground truth exactly: feed it a "prediction" equal to the truth.
    from napari_unet.core.inference import prediction

    truth = tifffile.imread(data / "lab.tif").astype(np.int32)

    class Result:
        instances = truth

    monkeypatch.setattr(prediction, "predict_image", lambda *a, **k: Result())
    assert main(["eval", "--model", str(data / "tiny.pt"), "--image", str(data / "img.tif"),
                 "--labels", str(data / "lab.tif"), "--device", "cpu"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[1:5] == ["1.000", "1.000", "1.000", "1.000"]


def test_dataset_folders_with_mask_suffix_and_png(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        image, labels = synthetic_nuclei((48, 48), seed=10 + i)
        skio.imsave(tmp_path / "images" / f"a{i}.png", (image * 200).astype(np.uint8),
                    check_contrast=False)
        tifffile.imwrite(tmp_path / "masks" / f"a{i}_mask.tif", labels.astype(np.uint16))
    skio.imsave(tmp_path / "images" / "lonely.png", np.zeros((48, 48), np.uint8),
                check_contrast=False)
    torch.manual_seed(0)
    save_model(tmp_path / "tiny.pt", UNet(1, 2, base_channels=4, depth=2), {})
    out = tmp_path / "m.pt"
    code = main(["train", "--images", str(tmp_path / "images"), "--masks",
                 str(tmp_path / "masks"), "--model", str(tmp_path / "tiny.pt"),
                 "--iterations", "2", "--tile", "32", "--batch-size", "1", "--device", "cpu",
                 "--no-plots", "--out", str(out)])
    assert code == 0
    assert "1 image(s) without a mask skipped: lonely.png" in capsys.readouterr().err
    assert load_model(out)[1].step == 2
    assert not (tmp_path / "m_curves.png").exists()
    # folders under the one name every command uses (--images/--masks above: older spellings)
    code = main(["eval", "--model", str(out), "--image", str(tmp_path / "images"),
                 "--labels", str(tmp_path / "masks"), "--device", "cpu"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["a0.png", "a1.png", "pooled"]


def test_ctrl_c_saves_the_model_so_far(data, monkeypatch, capsys):
    original = Trainer._train_step
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    out = data / "stopped.pt"
    assert main(train_args(data, "--out", str(out), "--iterations", "10")) == 130
    assert load_model(out)[1].step == 2
    assert "interrupted at step 2" in capsys.readouterr().out


def test_resume_continues_steps(data):
    first = data / "first.pt"
    assert main(train_args(data, "--out", str(first), "--no-plots")) == 0
    resumed = data / "resumed.pt"
    args = train_args(data, "--out", str(resumed), "--no-plots", "--resume")
    args[args.index("--model") + 1] = str(first)
    args[args.index("--iterations") + 1] = "5"
    assert main(args) == 0
    assert load_model(resumed)[1].step == 5


@pytest.mark.parametrize(("change", "message"), [
    (lambda a, d: a.__setitem__(a.index("--out") + 1, str(d / "nope" / "m.pt")),
     "output folder"),
    (lambda a, d: a.__setitem__(a.index("--image") + 1, str(d / "missing.tif")),
     "does not exist"),
    (lambda a, d: a.__setitem__(a.index("--model") + 1, str(d / "lab.tif")),
     "not a valid napari-unet model"),
    (lambda a, d: a.__setitem__(a.index("--labels") + 1, str(d / "small.tif")),
     "does not match"),
    (lambda a, d: a.extend(["--resume"]) or a.__setitem__(a.index("--model") + 1, "small"),
     "--resume needs"),
])
def test_train_bad_input(data, capsys, change, message):
    tifffile.imwrite(data / "small.tif", np.ones((10, 10), np.uint16))
    args = train_args(data, "--out", str(data / "m.pt"))
    change(args, data)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (data / "m.pt").exists()


def test_train_needs_data(data, capsys):
    assert main(["train", "--out", str(data / "m.pt"), "--image", str(data / "img.tif")]) == 2
    assert "--image and --labels go together" in capsys.readouterr().err


def test_eval_bad_input(data, capsys):
    assert main(["eval", "--model", str(data / "tiny.pt"), "--images", str(data / "nothing"),
                 "--masks", str(data)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--model", str(data / "tiny.pt"), "--image", str(data / "img.tif"),
                 "--labels", str(data / "lab.tif"), "--json",
                 str(data / "nope" / "s.json")]) == 2
    assert "output folder" in capsys.readouterr().err

"""``napari-unet predict`` and ``napari-unet batch`` end to end on tiny files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.model.checkpoint import load_model, save_model
from napari_unet.core.model.unet import UNet


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_model(path, UNet(1, 2, base_channels=4, depth=2, padding="same"))
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, shape in enumerate([(40, 48), (3, 36, 40)]):
        image = np.stack([synthetic_nuclei(shape[-2:], seed=i + z)[0] for z in range(3)]) \
            if len(shape) == 3 else synthetic_nuclei(shape, seed=i)[0]
        axes = "ZYX" if image.ndim == 3 else "YX"
        tifffile.imwrite(folder / f"img{i}.tif", (image * 1000).astype(np.uint16), imagej=True,
                         metadata={"axes": axes})
    return folder


def test_predict_writes_labels_uncertainty_and_probabilities(model_file, images, tmp_path):
    out = tmp_path / "labels.tif"
    status = main(["predict", "--model", str(model_file), "--image", str(images / "img1.tif"),
                   "--out", str(out), "--uncertainty", str(tmp_path / "u.tif"),
                   "--probabilities", str(tmp_path / "p.tif"), "--tile", "64",
                   "--device", "cpu"])
    assert status == 0
    labels = tifffile.imread(out)
    model, meta = load_model(model_file)
    # the file says ZYX: like batch, predict takes its axes (3D objects across the slices)
    ref = predict_image(model, tifffile.imread(images / "img1.tif"), meta=meta, tile_size=64,
                        device="cpu", axes="ZYX")
    np.testing.assert_array_equal(labels, ref.instances)
    assert tifffile.imread(tmp_path / "u.tif").shape == (3, 36, 40)
    assert tifffile.imread(tmp_path / "p.tif").shape == (3, 2, 36, 40)
    # never overwrites without --overwrite: exit 2, file untouched
    before = out.read_bytes()
    status = main(["predict", "--model", str(model_file), "--image", str(images / "img0.tif"),
                   "--out", str(out), "--device", "cpu"])
    assert status == 2 and out.read_bytes() == before



def test_predict_takes_the_files_z_spacing_also_when_axes_are_given(model_file, tmp_path):
    # one rule for batch and predict (core.batch.file_settings): the voxel size recorded in the
    # file gives the z spacing unless --z-spacing does, whether or not --axes is given
    stack = np.stack([synthetic_nuclei((36, 40), seed=z)[0] for z in range(4)])
    path = tmp_path / "voxels.tif"
    tifffile.imwrite(path, (stack * 1000).astype(np.uint16), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 2.0,
                                                      "unit": "um"})  # 0.5 um px, 2 um steps
    out, probs = tmp_path / "labels.tif", tmp_path / "p.tif"
    status = main(["predict", "--model", str(model_file), "--image", str(path), "--out",
                   str(out), "--probabilities", str(probs), "--axes", "ZYX",
                   "--orthogonal-views", "--tile", "64", "--device", "cpu"])
    assert status == 0
    model, meta = load_model(model_file)
    image = tifffile.imread(path)
    spaced = predict_image(model, image, meta=meta, tile_size=64, device="cpu", axes="ZYX",
                           z_spacing=4.0, orthogonal_views=True)
    unspaced = predict_image(model, image, meta=meta, tile_size=64, device="cpu", axes="ZYX",
                             orthogonal_views=True)
    written = tifffile.imread(probs)
    np.testing.assert_allclose(written, np.moveaxis(spaced.probabilities, 0, 1), atol=1e-6)
    assert not np.allclose(written, np.moveaxis(unspaced.probabilities, 0, 1), atol=1e-4)


def test_predict_orthogonal_views_with_a_given_z_spacing(model_file, images, tmp_path):
    out = tmp_path / "labels.tif"
    status = main(["predict", "--model", str(model_file), "--image", str(images / "img1.tif"),
                   "--out", str(out), "--tile", "64", "--device", "cpu",
                   "--orthogonal-views", "--z-spacing", "2.5"])
    assert status == 0
    model, meta = load_model(model_file)
    ref = predict_image(model, tifffile.imread(images / "img1.tif"), meta=meta, tile_size=64,
                        device="cpu", axes="ZYX", z_spacing=2.5, orthogonal_views=True)
    np.testing.assert_array_equal(tifffile.imread(out), ref.instances)
    # the same file without the views: a different (XY-only) foreground
    plain = predict_image(model, tifffile.imread(images / "img1.tif"), meta=meta,
                          tile_size=64, device="cpu", axes="ZYX", z_spacing=2.5,
                          orthogonal_views=False)
    assert (ref.probabilities[1] <= plain.probabilities[1] + 1e-6).all()
    assert not np.array_equal(ref.probabilities, plain.probabilities)
    # by default a stack this thin (less than 32 px tall seen from the side) gets XY only, as
    # with --no-orthogonal-views
    for flags, expected in (([], plain), (["--no-orthogonal-views"], plain)):
        out.unlink()
        assert main(["predict", "--model", str(model_file), "--image",
                     str(images / "img1.tif"), "--out", str(out), "--tile", "64", "--device",
                     "cpu", "--axes", "ZYX", "--z-spacing", "2.5", *flags]) == 0
        np.testing.assert_array_equal(tifffile.imread(out), expected.instances)


def test_predict_bad_tile_is_a_clear_error(model_file, images, tmp_path, capsys):
    status = main(["predict", "--model", str(model_file), "--image", str(images / "img0.tif"),
                   "--out", str(tmp_path / "x.tif"), "--tile", "50", "--device", "cpu"])
    assert status == 2
    assert "tile 50 is not legal" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_batch_exit_status_counts_failures(model_file, images, tmp_path, capsys):
    (images / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    out = tmp_path / "out"
    status = main(["batch", "--model", str(model_file), "--input", str(images / "*.tif"),
                   "--output", str(out), "--tile", "64", "--device", "cpu"])
    assert status == 1
    text = capsys.readouterr()
    assert "broken.tif" in text.err and "done 2, skipped 0" in text.out
    assert sorted(p.name for p in out.iterdir()) == ["img0.tif", "img1.tif"]
    # resumed run: nothing to redo, the broken file fails again
    status = main(["batch", "--model", str(model_file), "--input", str(images),
                   "--output", str(out), "--tile", "64", "--device", "cpu"])
    assert status == 1 and "done 0, skipped 2" in capsys.readouterr().out


def test_batch_into_the_input_folder_is_refused(model_file, images, capsys):
    status = main(["batch", "--model", str(model_file), "--input", str(images),
                   "--output", str(images), "--device", "cpu"])
    assert status == 2
    assert "would replace the input" in capsys.readouterr().err


def test_the_same_option_names_the_same_thing_in_predict_and_batch(model_file, images,
                                                                   tmp_path, capsys):
    # --image names the images in every command (batch's --input is the older spelling), and a
    # bare --probabilities writes <name>_probabilities.tif beside the labels in both
    out = tmp_path / "one.tif"
    assert main(["predict", "--model", str(model_file), "--image", str(images / "img0.tif"),
                 "--out", str(out), "--tile-size", "64", "--device", "cpu",
                 "--probabilities"]) == 0
    single = tifffile.imread(tmp_path / "one_probabilities.tif")
    folder = tmp_path / "many"
    assert main(["batch", "--model", str(model_file), "--image", str(images), "--out",
                 str(folder), "--tile-size", "64", "--device", "cpu", "--probabilities"]) == 0
    np.testing.assert_array_equal(tifffile.imread(folder / "img0_probabilities.tif"), single)
    np.testing.assert_array_equal(tifffile.imread(folder / "img0.tif"), tifffile.imread(out))
    helps = {command: " ".join(main_help(command, capsys).split()) for command in
             ("predict", "batch", "train", "eval")}
    assert all("--image" in text for text in helps.values())
    assert "--input" not in helps["batch"] and "--images" not in helps["train"]


def main_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out

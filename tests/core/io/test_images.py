import numpy as np
import pytest
import tifffile

from napari_unet.core.io.images import ImageData, read_image, write_labels


@pytest.fixture
def labels3d():
    rng = np.random.default_rng(0)
    return rng.integers(0, 500, (4, 24, 40)).astype(np.int32)


def test_imagej_round_trip_keeps_data_axes_and_pixel_size(tmp_path, labels3d):
    out = write_labels(tmp_path / "l.tif", labels3d, "ZYX", (2.0, 0.5, 0.25))
    assert out.format == "imagej" and out.note is None
    with tifffile.TiffFile(out.path) as tif:  # really an ImageJ hyperstack, 16 bit
        assert tif.is_imagej and tif.series[0].dtype == np.uint16
    back = read_image(out.path)
    np.testing.assert_array_equal(back.array, labels3d)
    assert back.axes == "ZYX"
    assert back.pixel_size == pytest.approx((2.0, 0.5, 0.25))
    assert back.channel_axis is None
    assert back.scale == pytest.approx((2.0, 0.5, 0.25))


def test_2d_without_pixel_size(tmp_path, labels3d):
    out = write_labels(tmp_path / "l.tif", labels3d[0])
    back = read_image(out.path)
    np.testing.assert_array_equal(back.array, labels3d[0])
    assert back.axes == "YX" and back.pixel_size is None and back.scale == (1.0, 1.0)


def test_axes_reordered_for_imagej_with_note(tmp_path, labels3d):
    yxz = np.moveaxis(labels3d, 0, -1)
    out = write_labels(tmp_path / "l.tif", yxz, "YXZ", (0.5, 0.25, 2.0))
    assert "YXZ to ZYX" in out.note
    back = read_image(out.path)
    np.testing.assert_array_equal(back.array, labels3d)
    assert back.pixel_size == pytest.approx((2.0, 0.5, 0.25))


def test_labels_above_uint16_go_to_uint32_ome(tmp_path, labels3d):
    labels = labels3d.copy()
    labels[1, 2, 3] = 70_000
    out = write_labels(tmp_path / "big.tif", labels, "ZYX", (1.0, 0.3, 0.3))
    assert out.format == "ome" and "70000" in out.note and "32-bit" in out.note
    back = read_image(out.path)
    assert back.array.dtype == np.uint32
    np.testing.assert_array_equal(back.array, labels)
    assert back.axes == "ZYX" and back.pixel_size == pytest.approx((1.0, 0.3, 0.3))


def test_imagej_multichannel_image_metadata(tmp_path):
    img = np.arange(3 * 2 * 16 * 16, dtype=np.uint16).reshape(3, 2, 16, 16)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, img, imagej=True, resolution=(1 / 0.3, 1 / 0.3),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "micron"})
    data = read_image(path)
    assert data.axes == "ZCYX" and data.channel_axis == 1
    assert data.pixel_size == pytest.approx((1.5, 0.3, 0.3))
    assert data.scale == pytest.approx((1.5, 0.3, 0.3))  # channel axis left out
    np.testing.assert_array_equal(data.array, img)


def test_nanometre_unit_converted(tmp_path):
    path = tmp_path / "nm.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), imagej=True,
                     resolution=(1 / 100, 1 / 200), metadata={"unit": "nm"})
    assert read_image(path).pixel_size == pytest.approx((0.2, 0.1))


def test_inch_resolution_is_not_a_pixel_size(tmp_path):
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_image(path).pixel_size is None


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_lazy_read_matches_eager(tmp_path, compression):
    img = np.random.default_rng(1).integers(0, 60_000, (5, 32, 32)).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, img, compression=compression)
    lazy = read_image(path, lazy_bytes=1)
    assert not isinstance(lazy.array, np.ndarray) or isinstance(lazy.array, np.memmap)
    assert lazy.axes == "ZYX"
    np.testing.assert_array_equal(np.asarray(lazy.array), img)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("lazy_bytes", [1, 2**30])
def test_truncated_tiff_is_a_clear_error(tmp_path, compression, lazy_bytes):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((4, 64, 64), np.uint16), compression=compression,
                     photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="cut.tif.*(truncated|corrupt|not a readable)"):
        read_image(path, lazy_bytes=lazy_bytes)


def test_not_a_tiff(tmp_path):
    path = tmp_path / "text.tif"
    path.write_text("hello")
    with pytest.raises(ValueError, match="text.tif"):
        read_image(path)


def test_png_rgb(tmp_path):
    import imageio.v3 as iio

    rgb = np.random.default_rng(2).integers(0, 255, (10, 12, 3)).astype(np.uint8)
    iio.imwrite(tmp_path / "x.png", rgb)
    data = read_image(tmp_path / "x.png")
    assert data.axes == "YXC" and data.channel_axis == 2
    np.testing.assert_array_equal(data.array, rgb)


def test_read_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "x.czi").write_bytes(b"0")
    with pytest.raises(ValueError, match="supported suffixes"):
        read_image(tmp_path / "x.czi")


def test_write_errors_leave_disk_unchanged(tmp_path, labels3d):
    with pytest.raises(ValueError, match="does not exist"):
        write_labels(tmp_path / "nope" / "l.tif", labels3d[0])
    target = tmp_path / "l.tif"
    write_labels(target, labels3d[0])
    before = target.read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        write_labels(target, labels3d[1])
    with pytest.raises(ValueError, match=">= 0"):
        write_labels(target, -labels3d[1] - 1, overwrite=True)
    with pytest.raises(ValueError, match="integers"):
        write_labels(target, labels3d[1] + 0.5, overwrite=True)
    with pytest.raises(ValueError, match="axes"):
        write_labels(target, labels3d, "YX", overwrite=True)
    with pytest.raises(ValueError, match="pixel_size"):
        write_labels(target, labels3d, "ZYX", (1.0, 1.0), overwrite=True)
    with pytest.raises(ValueError, match=".tif suffix"):
        write_labels(tmp_path / "l.png", labels3d[0])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.tif"]  # no temp files left
    write_labels(target, labels3d[1], overwrite=True)
    np.testing.assert_array_equal(read_image(target).array, labels3d[1])


def test_image_data_checks():
    with pytest.raises(ValueError, match="do not match"):
        ImageData(np.zeros((2, 3)), "ZYX")
    with pytest.raises(ValueError, match="distinct"):
        ImageData(np.zeros((2, 3)), "YY")


def test_written_file_has_normal_permissions(tmp_path, labels3d):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    out = write_labels(tmp_path / "l.tif", labels3d[0])
    assert stat.S_IMODE(out.path.stat().st_mode) == 0o666 & ~umask


def test_declared_size_is_checked_against_memory_only_where_it_is_allocated(tmp_path,
                                                                              monkeypatch):
    from napari_unet.core.io import resources

    stack = np.arange(2 * 300 * 200, dtype=np.uint16).reshape(2, 300, 200)
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    tifffile.imwrite(tmp_path / "zlib.tif", stack, compression="zlib", rowsperstrip=300)
    monkeypatch.setattr(resources, "available_memory", lambda: 100_000)
    # eager reads allocate the whole image: refused, naming the sizes
    with pytest.raises(ValueError, match=r"2 x 300 x 200 uint16 image .* needs 234.4 KiB of "
                                         r"memory, but only 97.7 KiB"):
        read_image(tmp_path / "plain.tif")
    # a memory map allocates nothing
    data = read_image(tmp_path / "plain.tif", lazy_bytes=1000)
    np.testing.assert_array_equal(np.asarray(data.array), stack)
    # a lazy compressed read decompresses one strip (here a whole 117 KiB plane) at a time
    with pytest.raises(ValueError, match=r"compressed blocks of 300 x 200; one block needs"):
        read_image(tmp_path / "zlib.tif", lazy_bytes=1000)
    monkeypatch.setattr(resources, "available_memory", lambda: 200_000)
    assert read_image(tmp_path / "zlib.tif", lazy_bytes=1000).array.shape == (2, 300, 200)

"""Hidden failures: our own bugs surface with their traceback instead of becoming a one-line
"file failed"; expected problems with a file stay a per-file failure with a message."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.core.model.checkpoint import load_model
from napari_unet.core.model.unet import UNet


def _run_batch(work, out, **kwargs):
    from napari_unet.core.events import BatchSummary
    from napari_unet.core.inference.batch import batch_segment

    model, meta = load_model(work / "tiny.pt")
    events = list(batch_segment(model, str(work / "in"), str(out), meta=meta, tile_size=64,
                                device="cpu", **kwargs))
    return next(e for e in events if isinstance(e, BatchSummary))


@pytest.fixture
def batch_inputs(work):
    folder = work / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "good.tif", tifffile.imread(work / "img.tif"))
    return folder


def test_a_bug_in_our_code_surfaces_instead_of_failing_the_file(work, batch_inputs,
                                                                 monkeypatch):
    class OurBug(Exception):
        pass

    def broken(self, x, keep=None):
        raise OurBug("a programming error inside the net")

    monkeypatch.setattr(UNet, "lean_forward", broken)
    with pytest.raises(OurBug):
        _run_batch(work, work / "out")
    out = work / "out"
    assert not out.exists() or not [p.name for p in out.iterdir()]  # nothing half-written


def test_a_corrupt_file_is_a_failure_with_a_message(work, batch_inputs):
    (batch_inputs / "broken.tif").write_bytes(b"II*\x00" + bytes(100))
    summary = _run_batch(work, work / "out")
    assert [p.name for p in summary.done] == ["good.tif"]
    [(path, message)] = summary.failed
    assert path.name == "broken.tif" and "broken.tif" in message


def test_training_leaves_the_torch_thread_count_alone(work):
    from napari_unet.core.training.config import TrainConfig
    from napari_unet.core.training.trainer import Trainer
    from napari_unet.core.training.trainingset import TrainingSet

    before = torch.get_num_threads()
    image = tifffile.imread(work / "img.tif").astype(np.float32)
    labels = tifffile.imread(work / "lab.tif")
    model, _ = load_model(work / "tiny.pt")
    samples = TrainingSet([image], [labels], convention="dense", validation_fraction=0)
    trainer = Trainer(model, samples, TrainConfig(preset="fast", iterations=1, tile_size=32,
                                                  batch_size=1, device="cpu", workers=0))
    for _ in trainer.events():
        pass
    trainer.close()
    assert torch.get_num_threads() == before

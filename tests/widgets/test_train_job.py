"""The Train dock's job generator, driven without Qt (tiny net, tiny image)."""

from __future__ import annotations

import numpy as np
import torch

from napari_unet._widgets.train_job import (
    Started,
    TrainJob,
    crop,
    gui_friendly_threads,
)
from napari_unet._widgets.train_preview import PreviewBox
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import LossReport, Preview
from napari_unet.core.model.unet import UNet
from napari_unet.core.runtime.threads import TorchThreads
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.trainingset import TrainingSet


def tiny_build(in_channels: int, num_classes: int):
    return UNet.small(in_channels=in_channels, num_classes=num_classes, depth=2,
                      base_channels=8), None


def samples():
    image, instances = synthetic_nuclei((64, 64), seed=1)
    labels = np.where(instances > 0, instances + 1, 1).astype(np.int32)
    labels[:, 40:] = 0
    return image, TrainingSet([image], [labels], convention="sparse")


def test_torch_threads_are_put_back():
    before = torch.get_num_threads()
    threads = TorchThreads(before + 1)
    threads.apply()
    assert torch.get_num_threads() == before + 1
    threads.apply()  # twice: still restores the value from before the first
    threads.restore()
    assert torch.get_num_threads() == before
    threads.restore()  # idempotent
    assert torch.get_num_threads() == before
    assert gui_friendly_threads(2) == 1 and gui_friendly_threads(1) == 1
    assert gui_friendly_threads(8) == 7


def test_crop_takes_the_region_of_the_slice_and_keeps_channels():
    stack = np.arange(2 * 3 * 8 * 9).reshape(2, 3, 8, 9)
    out = crop(stack, 1, (1, slice(2, 5), slice(0, 4)))
    assert out.shape == (3, 3, 4) and np.array_equal(out, stack[1, :, 2:5, 0:4])
    plane = stack[0, 0]
    assert np.array_equal(crop(plane, None, (None, slice(1, 3), slice(1, 3))), plane[1:3, 1:3])


def test_job_trains_to_the_end_follows_the_preview_box_and_cleans_up():
    image, data = samples()
    config = TrainConfig(iterations=6, tile_size=64, batch_size=1, validate_every=0,
                         preview_every_s=0.0, device="cpu")
    box = PreviewBox()
    box.set((None, slice(0, 32), slice(0, 32)))
    before = torch.get_num_threads()
    job = TrainJob(tiny_build, data, config, image, None, box, threads=before + 1)
    events = job.events()
    first = next(events)
    assert isinstance(first, Started) and first.trainer is job.trainer
    assert torch.get_num_threads() == before + 1  # set for the training...
    previews, losses = [], []
    for event in events:
        if isinstance(event, LossReport):
            losses.append(event.step)
            if event.step == 3:  # the view moves: later previews show the new region
                box.set((None, slice(32, 64), slice(16, 48)))
        elif isinstance(event, Preview):
            previews.append(event)
    assert losses == [1, 2, 3, 4, 5, 6]  # one run of steps across the restart
    assert previews[0].region == (None, slice(0, 32), slice(0, 32))
    assert previews[-1].region == (None, slice(32, 64), slice(16, 48))
    assert all(p.probabilities.shape == (32, 32) for p in previews)
    job.close()
    assert torch.get_num_threads() == before  # ...and put back
    job.close()  # idempotent

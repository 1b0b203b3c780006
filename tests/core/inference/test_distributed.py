"""One plane on a dask cluster: the same objects as the local run."""

from __future__ import annotations

import distributed
import numpy as np
import pytest
import torch

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import Progress
from napari_unet.core.inference.config import PredictConfig
from napari_unet.core.inference.distributed import segment_plane_distributed, weights_token
from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.model.unet import UNet


def test_weights_token_follows_the_content():
    torch.manual_seed(0)
    a = UNet(1, 2, base_channels=4, depth=2)
    b = UNet(1, 2, base_channels=4, depth=2)
    state = a.state_dict()
    assert weights_token(state) == weights_token({k: v.clone() for k, v in state.items()})
    assert weights_token(state) != weights_token(b.state_dict())


@pytest.mark.parametrize("rescaled", [False, True])
def test_plane_on_a_local_cluster_equals_local_prediction(monkeypatch, rescaled):
    from napari_unet.core.inference import distributed as cluster_module
    from napari_unet.core.model.checkpoint import resolve_model

    built = []
    real = cluster_module.plane_predictor
    monkeypatch.setattr(cluster_module, "plane_predictor",
                        lambda *a: built.append(a[2]) or real(*a))
    monkeypatch.setattr(cluster_module, "_PREDICTOR_CACHE", {})
    net, meta = resolve_model("default")
    image, _ = synthetic_nuclei((180, 200), seed=5)
    # rescaled: objects a quarter of the model's diameter, predicted and labelled at 2x
    diameter = meta.object_diameter / 4 if rescaled else None
    config = PredictConfig(device="cpu", tiling="exact", object_diameter=diameter)
    local = predict_image(net, image, meta, device="cpu", tiling="exact", block_size=96,
                          object_diameter=diameter)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        gen = segment_plane_distributed(client, net, image, config, meta, chunk=96)
        events = []
        while True:
            try:
                events.append(next(gen))
            except StopIteration as stop:
                result = stop.value
                break
    blocks = [e for e in events if isinstance(e, Progress) and "cluster" in e.message]
    assert len(blocks) == 4  # 2 x 2 windows
    assert len(built) == 1  # one predictor (net, channels-last copy) for all of them
    np.testing.assert_allclose(result.probabilities, local.probabilities, atol=1e-5)
    assert local.instances.max() > 10
    a, b = result.instances, local.instances
    np.testing.assert_array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def test_stacks_are_refused():
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=2)
    with pytest.raises(ValueError, match="one plane"):
        next(segment_plane_distributed(object(), net, np.zeros((2, 64, 64), np.float32)))

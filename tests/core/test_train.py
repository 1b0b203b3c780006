import gc
import threading
import time

import numpy as np
import pytest
import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.checkpoint import load_checkpoint, load_model
from napari_unet.core.normalize import normalize
from napari_unet.core.trainingset import TrainingSet
from napari_unet.core.events import LossReport, Preview, Progress, ValidationReport
from napari_unet.core.losses import crop_to_output
from napari_unet.core.sampling import make_batch
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import synthetic_nuclei
from napari_unet.core.train import (
    TrainConfig,
    Trainer,
    batch_spec,
    forward_full,
    targets_and_weights,
    train,
)
from napari_unet.core.weights import foreground_target

NO_AUG = AugmentConfig.none()


@pytest.fixture(scope="module")
def nuclei():
    return synthetic_nuclei((96, 96), seed=3)


def tiny(padding="same", seed=0, **kw):
    torch.manual_seed(seed)
    return UNet(1, 2, base_channels=8, depth=2, padding=padding, **kw)


def config(**kw):
    base = dict(iterations=4, tile_size=48, batch_size=2, augment=NO_AUG, validate_every=0,
                device="cpu", lr=3e-3)
    return TrainConfig.fast(**{**base, **kw})


def foreground_iou(model, image, instances, spec):
    model.eval()
    with torch.no_grad():
        logits = forward_full(model, normalize(image[None], spec, 0), torch.device("cpu"))
    pred = torch.softmax(logits, 0)[1].numpy() > 0.5
    gt = foreground_target(instances) > 0  # what the net is trained on: gaps between objects
    return (pred & gt).sum() / (pred | gt).sum()


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- config ----------------------------------------------------------------------------------
def test_presets():
    paper, fast = TrainConfig.paper(), TrainConfig.fast()
    assert (paper.optimizer, paper.momentum, paper.batch_size, paper.tile_size) == \
        ("sgd", 0.99, 1, 572)
    assert paper.augment == AugmentConfig.paper()
    assert (fast.optimizer, fast.batch_size, fast.tile_size) == ("adam", 4, 256)
    assert TrainConfig() == fast
    assert TrainConfig.paper(lr=0.05).lr == 0.05
    assert (paper.w0, paper.sigma) == (10.0, 5.0)


def test_config_dict_round_trip():
    cfg = TrainConfig.paper(iterations=7, class_weights=[1, 3], augment=NO_AUG)
    assert cfg.class_weights == (1.0, 3.0)
    d = cfg.to_dict()
    assert d["augment"]["elastic"] is False and d["class_weights"] == [1.0, 3.0]
    assert TrainConfig.from_dict(d) == cfg


@pytest.mark.parametrize(("kw", "match"), [
    (dict(lr=0), "lr must be"),
    (dict(lr=-1e-3), "lr must be"),
    (dict(lr=float("nan")), "lr must be"),
    (dict(iterations=0), "iterations must be"),
    (dict(preset="turbo"), "preset must be one of"),
    (dict(batch_size=0), "batch_size must be"),
    (dict(loss="focal"), "loss must be one of"),
    (dict(optimizer="rmsprop"), "optimizer must be one of"),
    (dict(momentum=1.0), "momentum must be"),
    (dict(sigma=0), "sigma must be"),
    (dict(w0=-1), "w0 must be"),
    (dict(class_weights="inverse"), "class_weights must be"),
    (dict(validate_every=-1), "validate_every"),
    (dict(preview_every_s=-1), "preview_every_s"),
    (dict(device="tpu"), "device must be one of"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_illegal_tile_for_valid_net(nuclei):
    samples = TrainingSet([nuclei[0]], [nuclei[1]])
    model = tiny("valid")  # depth 2: legal inputs are 44, 48, 52, ...
    with pytest.raises(ValueError, match="tile 50 is not legal .* nearest are 48 and 52"):
        Trainer(model, samples, config(tile_size=50))
    assert TrainConfig(tile_size=50).tile_for(tiny("same")) == 52  # rounded up to 2**depth


def test_model_and_samples_must_fit(nuclei):
    samples = TrainingSet([nuclei[0]], [nuclei[1]])
    with pytest.raises(ValueError, match="1 channel"):
        Trainer(UNet(3, 2, base_channels=4, depth=2), samples, config())
    with pytest.raises(ValueError, match="2-class model"):
        Trainer(UNet(1, 3, base_channels=4, depth=2), samples, config())


# -- data preparation ------------------------------------------------------------------------
def test_valid_net_batches_are_cropped_consistently(nuclei):
    _, instances = nuclei
    # The image is the foreground mask itself, so the image's output-region centre must equal
    # the target pixel for pixel if both are cropped the same way.
    image = (instances > 0).astype(np.float32)
    samples = TrainingSet([image], [instances], normalization={"method": "none"},
                          validation_fraction=0.0)
    model = tiny("valid")
    cfg = config(tile_size=84, separate_touching=False)
    trainer = Trainer(model, samples, cfg)
    assert trainer.tile == 84 and trainer.output_hw == (44, 44) and model.context == 20
    spec = batch_spec(cfg, model, True)

    def maker(step):
        return tuple(torch.from_numpy(a) for a in make_batch(samples.snapshot(), spec, step))

    for step in range(3):
        x, y, w = maker(step)
        assert x.shape == (2, 1, 84, 84) and x.dtype == torch.float32
        assert y.shape == (2, 44, 44) and y.dtype == torch.int64
        assert w.shape == (2, 44, 44) and w.dtype == torch.float32
        assert torch.equal(crop_to_output(x[:, 0], (44, 44)).long(), y)
        assert bool((w > 0).all())
    # the same step gives the same batch (seeded by (seed, step), not by thread timing)
    assert all(torch.equal(a, b) for a, b in zip(maker(1), maker(1), strict=True))
    events = list(trainer.events())
    assert trainer.step == 4
    assert [type(e) for e in events] == [Progress, LossReport] * 4
    assert all(np.isfinite(e.loss) for e in events if isinstance(e, LossReport))


def test_targets_and_weights_instance_and_semantic():
    inst = np.zeros((12, 12), np.int32)
    inst[2:6, 2:6] = 1
    inst[2:6, 6:10] = 2  # touching object 1
    target, weights = targets_and_weights(inst, None, True, 2)
    assert target.dtype == np.int64 and weights.dtype == np.float32
    assert target[3, 5] == 0 and target[3, 6] == 1  # 1-px gap cut into the smaller id
    assert weights[3, 5] > weights[0, 0]  # the gap gets the border weight
    ignore = np.zeros_like(inst, bool)
    ignore[:, :2] = True
    _, w_ign = targets_and_weights(inst, ignore, True, 2)
    assert (w_ign[:, :2] == 0).all() and (w_ign[:, 2:] > 0).all()
    # nothing annotated: no error, zero weight
    t0, w0 = targets_and_weights(inst, np.ones_like(ignore), True, 2)
    assert not t0.any() and not w0.any()
    classes = np.array([[0, 1, 2, 2]] * 2)
    t, w = targets_and_weights(classes, None, False, 3, class_weights=None)
    assert np.array_equal(t, classes) and (w == 1).all()


# -- training --------------------------------------------------------------------------------
def test_tiny_net_overfits_touching_nuclei(nuclei):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    model = tiny()
    before = foreground_iou(model, image, instances, samples.normalization)
    cfg = config(iterations=150, tile_size=64, batch_size=4)
    losses = [e.loss for e in train(model, samples, cfg) if isinstance(e, LossReport)]
    assert len(losses) == 150
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    after = foreground_iou(model, image, instances, samples.normalization)
    assert after >= 0.9 > before


def test_events_validation_and_preview(nuclei):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.25)
    assert samples.validation_items()
    trainer = Trainer(tiny(), samples, config(validate_every=2, preview_every_s=0))
    crop = image[10:50, 20:70]
    events = list(trainer.events(preview=crop))
    per_step = [Progress, LossReport]
    expected = (per_step + [Preview] + per_step + [ValidationReport, Preview]) * 2
    assert [type(e) for e in events] == expected
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3, 4]
    assert all(e.total == 4 for e in events if isinstance(e, Progress))
    reports = [e for e in events if isinstance(e, ValidationReport)]
    assert [r.step for r in reports] == [2, 4]
    assert set(reports[0].metrics) == {"loss", "iou", "ap50"}
    assert all(0 <= r.metrics["iou"] <= 1 for r in reports)
    previews = [e for e in events if isinstance(e, Preview)]
    assert all(p.probabilities.shape == (40, 50) for p in previews)
    assert all(0 <= p.probabilities.min() and p.probabilities.max() <= 1 for p in previews)
    assert model_is_training(trainer)  # validation/preview switch eval mode back off


def model_is_training(trainer):
    return trainer.model.training


def test_preview_on_valid_net_and_throttling(nuclei):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    trainer = Trainer(tiny("valid"), samples, config(tile_size=84, preview_every_s=3600))
    previews = [e for e in trainer.events(preview=image[:30, :33]) if isinstance(e, Preview)]
    # after the first step, then not again for an hour, except after the last step
    assert [p.step for p in previews] == [1, 4]
    assert previews[0].probabilities.shape == (30, 33)


def test_bad_previews(nuclei):
    samples = TrainingSet([nuclei[0]], [nuclei[1]])
    trainer = Trainer(tiny(), samples, config())
    with pytest.raises(ValueError, match="at most 512x512"):
        next(trainer.events(preview=np.zeros((600, 20), np.float32)))
    with pytest.raises(ValueError, match="3 channel"):
        next(trainer.events(preview=np.zeros((3, 20, 20), np.float32)))
    assert trainer.step == 0


def test_semantic_training(nuclei):
    image, instances = nuclei
    classes = np.where(instances > 0, 1 + instances % 2, 0).astype(np.int32)
    samples = TrainingSet([image], [classes], convention="semantic", mode="semantic",
                          num_classes=3, validation_fraction=0.25)
    model = UNet(1, 3, base_channels=8, depth=2)
    trainer = Trainer(model, samples, config(validate_every=4, loss="weighted_ce+dice"))
    events = list(trainer.events(preview=image[:20, :20]))
    report = [e for e in events if isinstance(e, ValidationReport)][-1]
    assert set(report.metrics) == {"loss", "iou"}
    assert trainer.meta().mode == "semantic"


def test_stop_save_load_round_trip(nuclei, tmp_path):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    trainer = Trainer(tiny(), samples, config(iterations=50))
    for event in trainer.events():
        if isinstance(event, LossReport) and event.step == 3:
            break  # like napari's worker.quit(): the generator is simply not pulled again
    assert trainer.step == 3
    path = trainer.save(tmp_path / "m.pt")
    model, meta = load_model(path)
    saved = trainer.model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert meta["step"] == 3 and meta["mode"] == "instances"
    assert meta["normalization"] == samples.normalization
    assert meta["object_diameter"] == pytest.approx(samples.object_diameter)
    assert TrainConfig.from_dict(meta["training"]) == trainer.config
    x = torch.from_numpy(normalize(image[None, None], samples.normalization, 1))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(x), model(x))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_resume_matches_uninterrupted_run(nuclei, tmp_path, dropout):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    cfg = config(iterations=6)
    straight = Trainer(tiny(dropout=dropout), samples, cfg)
    rng_before = torch.get_rng_state()
    for _ in straight.events():
        pass
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout seeding leaves it alone

    first = Trainer(tiny(dropout=dropout), samples, cfg)
    for event in first.events():
        if isinstance(event, LossReport) and event.step == 3:
            break
    first.save(tmp_path / "half.pt")
    ckpt = load_checkpoint(tmp_path / "half.pt")
    resumed = Trainer(ckpt.model, samples, cfg, checkpoint_state=ckpt)
    assert resumed.step == 3
    steps = [e.step for e in resumed.events() if isinstance(e, LossReport)]
    assert steps == [4, 5, 6]
    a, b = params(straight.model), params(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert [s["step"] for s in sa["state"].values()] == [s["step"] for s in sb["state"].values()]


def test_events_again_continues(nuclei):
    samples = TrainingSet([nuclei[0]], [nuclei[1]], validation_fraction=0.0)
    trainer = Trainer(tiny(), samples, config(iterations=4))
    for event in trainer.events():
        if isinstance(event, LossReport):
            break
    assert [e.step for e in trainer.events() if isinstance(e, LossReport)] == [2, 3, 4]
    assert list(trainer.events()) == []  # already done


def test_label_updates_are_picked_up(nuclei):
    image, instances = nuclei
    cfg = config(iterations=8, prefetch=1)

    def losses(update_at):
        samples = TrainingSet([image], [instances], validation_fraction=0.0)
        out = []
        for event in Trainer(tiny(), samples, cfg).events():
            if isinstance(event, LossReport):
                out.append(event.loss)
                if event.step == update_at:
                    samples.update(0, np.zeros_like(instances))  # all background now
        return out

    plain, updated = losses(None), losses(2)
    assert plain[:2] == updated[:2]  # deterministic up to the update
    # At most prefetch + 1 batches prepared before the update are still used; after that the
    # targets are all background and the loss path differs.
    assert all(a != b for a, b in zip(plain[4:], updated[4:], strict=True))


def test_abandoned_generator_stops_data_thread(nuclei):
    samples = TrainingSet([nuclei[0]], [nuclei[1]], validation_fraction=0.0)
    trainer = Trainer(tiny(), samples, config(iterations=1000))
    events = trainer.events()
    next(events)

    def alive():
        return [t for t in threading.enumerate() if t.name == "napari-unet-train-data"]

    assert alive()
    del events
    gc.collect()
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()
    assert trainer.step == 1

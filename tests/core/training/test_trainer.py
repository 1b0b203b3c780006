import copy
import gc
import threading
import time

import numpy as np
import pytest
import torch

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import LossReport, Message, Preview, Progress, ValidationReport
from napari_unet.core.model.checkpoint import load_checkpoint, load_model
from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import normalize
from napari_unet.core.training.augment import AugmentConfig
from napari_unet.core.training.config import TrainConfig, preset_for
from napari_unet.core.training.losses import crop_to_output
from napari_unet.core.training.sampling import make_batch
from napari_unet.core.training.sources import batch_spec
from napari_unet.core.training.trainer import Trainer, forward_full, train
from napari_unet.core.training.trainingset import TrainingSet
from napari_unet.core.training.validation import (
    MIN_CHOOSING_OBJECTS,
    validation_chooses,
    validation_is_meaningful,
    validation_plan,
)
from napari_unet.core.training.weight_map import foreground_target, targets_and_weights

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
    assert (w_ign[:, :2] == 0).all()
    # object 1's edge against the not-annotated columns is left out too (weights.unsure_edges)
    assert (w_ign[2:6, 2] == 0).all() and (w_ign[2:6, 3:] > 0).all()
    assert (w_ign[:2, 2:] > 0).all() and (w_ign[6:, 2:] > 0).all()
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
    # figures, but too few objects held out to choose the kept weights: the dock says so
    assert isinstance(events[0], Message) and events[0].text.startswith(
        "the last weights are kept: the held-out part has ")
    assert [type(e) for e in events[1:]] == expected
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
    assert meta.step == 3 and meta.mode == "instances"
    assert meta.normalization == samples.normalization
    assert meta.object_diameter == pytest.approx(samples.object_diameter)
    assert TrainConfig.from_dict(meta.training) == trainer.config
    x = torch.from_numpy(normalize(image[None, None], samples.normalization, 1))
    # loaded for the CPU in the channels-last layout (core.checkpoint): compare in that layout
    trainer.model.eval().to(memory_format=torch.channels_last)
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


def test_a_run_with_a_moving_average_resumes_exactly(nuclei, tmp_path):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    cfg = config(iterations=6, average=0.6)
    straight = Trainer(tiny(), samples, cfg)
    for _ in straight.events():
        pass
    straight.save(tmp_path / "straight.pt", best=False)
    want = load_checkpoint(tmp_path / "straight.pt")

    first = Trainer(tiny(), samples, cfg)
    for event in first.events():
        if isinstance(event, LossReport) and event.step == 3:
            break
    first.save(tmp_path / "half.pt", best=False)
    half = load_checkpoint(tmp_path / "half.pt")
    assert half.live_state is not None
    assert any(not torch.equal(half.live_state[k], v)  # the average is not the live weights
               for k, v in half.model.state_dict().items())
    resumed = Trainer(half.model, samples, cfg, checkpoint_state=half)
    assert [e.step for e in resumed.events() if isinstance(e, LossReport)] == [4, 5, 6]
    resumed.save(tmp_path / "resumed.pt", best=False)
    got = load_checkpoint(tmp_path / "resumed.pt")
    for k, v in want.model.state_dict().items():  # the average and the live weights both
        torch.testing.assert_close(got.model.state_dict()[k], v, rtol=0, atol=1e-6)
        torch.testing.assert_close(got.live_state[k], want.live_state[k], rtol=0, atol=1e-6)

    # resumed without the average, training goes on from the live weights: the averaged run's
    # live weights at the end (averaging does not change what the optimizer does)
    again = load_checkpoint(tmp_path / "half.pt")  # half's model was trained on in place
    plain = Trainer(again.model, samples, config(iterations=6), checkpoint_state=again)
    for _ in plain.events():
        pass
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(v, want.live_state[k], rtol=0, atol=1e-6)


def test_events_again_continues_from_the_live_weights(nuclei):
    samples = TrainingSet([nuclei[0]], [nuclei[1]], validation_fraction=0.0)
    straight = Trainer(tiny(), samples, config(iterations=4, average=0.6))
    for _ in straight.events():
        pass
    stopped = Trainer(tiny(), samples, config(iterations=4, average=0.6))
    for event in stopped.events():
        if isinstance(event, LossReport) and event.step == 2:
            break
    for _ in stopped.events():  # the model held the average in between
        pass
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(stopped.model.state_dict()[k], v, rtol=0, atol=1e-6)


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


# -- time budget, ETA, best model so far (issue 11) -----------------------------------------
class FakeClock:
    """Time moves only when the net trains: ``per_step`` seconds per optimizer step."""

    def __init__(self, trainer, per_step):
        self.now = 1000.0
        step = trainer._train_step

        def timed_step(*args):
            self.now += per_step
            return step(*args)

        trainer._train_step = timed_step

    def __call__(self):
        return self.now


def test_minutes_budget_stops_on_time_with_eta_and_rate_and_saves(nuclei, tmp_path):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    trainer = Trainer(tiny(), samples, config(iterations=1000, minutes=1.0))
    trainer.clock = FakeClock(trainer, per_step=10.0)
    events = list(trainer.events())
    # 10 s per step, 60 s budget: the sixth step ends at 60 s; a seventh would overrun it
    assert trainer.step == 6
    progress = [e for e in events if isinstance(e, Progress)]
    # the first step carries start-up: no rate yet, so no total to show before the second
    assert progress[0].step == 2 and progress[0].rate == pytest.approx(0.1)
    assert progress[1].eta_s == pytest.approx(30.0)  # 60 s budget - 30 s spent
    # steps the budget allows at this rate, not 1000, from the first total shown on
    assert [p.total for p in progress] == [6] * 5
    stops = [e for e in events if isinstance(e, Message) and e.data.get("reason") == "minutes"]
    assert len(stops) == 1 and "1 min" in stops[0].text
    path = trainer.save(tmp_path / "m.pt")
    assert load_checkpoint(path).meta.step == 6
    # iterations first: the step budget wins
    trainer = Trainer(tiny(), samples, config(iterations=3, minutes=1.0))
    trainer.clock = FakeClock(trainer, per_step=1.0)
    events = list(trainer.events())
    assert trainer.step == 3 and not any(isinstance(e, Message) for e in events)
    assert [e.eta_s for e in events if isinstance(e, Progress)][-1] == pytest.approx(0.0)


def test_a_time_budget_alone_has_no_step_limit(nuclei, monkeypatch):
    import sys

    from napari_unet.core.training import config as train

    assert TrainConfig().iterations == train.DEFAULT_ITERATIONS == 500
    assert TrainConfig(minutes=3).iterations is None
    assert TrainConfig(minutes=3).step_limit == sys.maxsize
    assert TrainConfig(minutes=3, iterations=200).step_limit == 200
    monkeypatch.setattr(train, "DEFAULT_ITERATIONS", 3)  # so that passing it is cheap
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    trainer = Trainer(tiny(), samples, config(iterations=None))
    assert trainer.config.iterations == 3 and len(list(trainer.events())) and trainer.step == 3
    trainer = Trainer(tiny(), samples, config(iterations=None, minutes=1.0))
    trainer.clock = FakeClock(trainer, per_step=10.0)
    events = list(trainer.events())
    assert trainer.step == 6  # the 60 s budget, past the 3 a step count would have allowed
    totals = [e.total for e in events if isinstance(e, Progress)]
    assert totals == [6] * 5  # from the measured rate: no guess from the start-up step


@pytest.mark.parametrize("minutes", [0, -1.0, 24 * 60 + 1, float("nan"), float("inf"), True])
def test_bad_time_budget(minutes):
    with pytest.raises(ValueError, match="minutes must be a time budget"):
        TrainConfig(minutes=minutes)


def dense_with_validation():
    """Painted all over, with enough objects held out (24) to choose the kept weights."""
    image, instances = synthetic_nuclei((192, 160), n_objects=80, radius=(5.0, 8.0), seed=4)
    return TrainingSet([image], [instances], validation_fraction=0.3)


def test_best_so_far_saves_the_best_validation_step(tmp_path):
    samples = dense_with_validation()
    assert validation_chooses(samples) == (True, "24 objects")
    trainer = Trainer(tiny(), samples, config(iterations=6, validate_every=1))
    scores = {1: 0.2, 2: 0.5, 3: 0.9, 4: 0.3, 5: 0.4, 6: 0.1}
    weights_at = {}

    def scripted_validate():
        weights_at[trainer.step] = params(trainer.model)
        return ValidationReport(trainer.step, {"iou": scores[trainer.step]})

    trainer.validate = scripted_validate
    events = list(trainer.events())
    assert trainer.best_step == 3
    assert any(isinstance(e, Message) and e.data.get("best_step") == 3 for e in events)
    last = params(trainer.model)
    path = trainer.save(tmp_path / "best.pt")
    loaded, meta = load_model(path)
    assert meta.best_step == 3 and meta.step == 3
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, weights_at[3][k])
    # saving did not change the model in memory; inside kept_weights() it holds what is saved
    assert all(torch.equal(v, last[k]) for k, v in trainer.model.state_dict().items())
    with trainer.kept_weights() as kept:
        assert all(torch.equal(v, weights_at[3][k]) for k, v in kept.state_dict().items())
    assert all(torch.equal(v, last[k]) for k, v in trainer.model.state_dict().items())
    # best=False writes the last weights with their optimizer state
    ck = load_checkpoint(trainer.save(tmp_path / "last.pt", best=False))
    assert ck.meta.step == 6 and ck.optimizer_state is not None


def test_small_held_out_part_gives_no_figure_keeps_the_last_weights_and_says_why(nuclei,
                                                                                 tmp_path):
    image, instances = nuclei
    sparse = np.where(instances > 0, instances + 1, 1)
    sparse[:, 40:] = 0  # a narrow annotated strip: its held-out part is tiny
    samples = TrainingSet([image], [sparse], convention="sparse", validation_fraction=0.1)
    ok, why = validation_is_meaningful(samples)
    assert not ok and "fewer than" in why
    trainer = Trainer(tiny(), samples, config(iterations=2, validate_every=1))
    events = list(trainer.events())
    assert isinstance(events[0], Message) and events[0].text == (
        "no validation score: the held-out part has 400 annotated pixels (fewer than 2000); "
        "the last weights are kept")
    assert not [e for e in events if isinstance(e, ValidationReport)]  # no figure that lies
    assert trainer.best_step is None
    with trainer.evaluation_weights() as model:
        given = params(model)
    with trainer.kept_weights() as kept:  # no best step: what the run gives now
        assert all(torch.equal(v, given[k]) for k, v in kept.state_dict().items())
    assert load_checkpoint(trainer.save(tmp_path / "m.pt")).meta.best_step is None


def test_labels_changed_to_another_shape_mid_run_leave_training_untouched(nuclei):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    trainer = Trainer(tiny(), samples, config(iterations=3))
    events = trainer.events()
    next(events)
    before = samples.version
    with pytest.raises(ValueError, match="does not match image shape"):
        samples.update(0, instances[:50])
    assert samples.version == before
    list(events)
    assert trainer.step == 3


def test_finetune_preset_is_the_default_from_a_trained_model():
    assert preset_for(from_trained=True) == "finetune"
    assert preset_for(from_trained=False) == "fast"
    ft = TrainConfig.finetune()
    assert ft.tile_size <= 192 and ft.warmup_steps > 0 and ft.encoder_lr_scale < 1
    assert TrainConfig.from_dict(ft.to_dict()) == ft


def test_cli_and_dock_agree_on_the_recipe():
    # The CLI's default preset for a start from a trained model is core.train.preset_for's;
    # the dock's (if it offers one) must be the same function's answer.
    import argparse

    from napari_unet import _cli_train

    parser = argparse.ArgumentParser()
    _cli_train.add_arguments(parser)
    args = parser.parse_args(["--image", "a", "--labels", "b", "--out", "m.pt"])
    assert args.preset is None and args.model == "default"  # -> preset_for(from_trained=True)
    config = _cli_train.train_config(args)
    assert config.preset == preset_for(from_trained=True) == "finetune"
    assert config.workers == "auto"  # as the dock: batches in worker processes
    new = _cli_train.train_config(parser.parse_args(["--image", "a", "--labels", "b", "--out",
                                                     "m.pt", "--model", "small"]))
    assert new.preset == preset_for(from_trained=False) == "fast"


def test_warmup_and_encoder_rate():
    samples = TrainingSet(*[[a] for a in synthetic_nuclei((64, 64), seed=1)],
                          validation_fraction=0.0)
    trainer = Trainer(tiny(), samples, config(iterations=4, warmup_steps=4,
                                              encoder_lr_scale=0.5, lr=1e-3))
    lrs = [(e.lr, [g["lr"] for g in trainer.optimizer.param_groups])
           for e in trainer.events() if isinstance(e, LossReport)]
    assert [lr for lr, _ in lrs] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[-1][1] == pytest.approx([1e-3, 5e-4])  # decoder, encoder
    frozen = Trainer(tiny(), samples, config(iterations=2, encoder_lr_scale=0.0))
    enc = params(frozen.model.inc)
    list(frozen.events())
    assert all(torch.equal(v, enc[k]) for k, v in frozen.model.inc.state_dict().items())


def test_frozen_levels_stay_and_thaw_for_the_next_run():
    samples = TrainingSet(*[[a] for a in synthetic_nuclei((64, 64), seed=1)],
                          validation_fraction=0.0)
    net = UNet(1, 2, base_channels=4, depth=3)
    before = params(net)
    list(Trainer(net, samples, config(iterations=3, frozen_levels=1)).events())
    after = params(net)
    top = [k for k in before if k.startswith(("inc.", "ups.2.", "outc."))]
    assert top and all(torch.equal(before[k], after[k]) for k in top)
    weights = [k for k in before if k.endswith("weight") and k not in top]
    assert all(not torch.equal(before[k], after[k]) for k in weights)
    # a later run on the same model object that freezes nothing trains them again
    list(Trainer(net, samples, config(iterations=2)).events())
    again = params(net)
    assert all(not torch.equal(after[k], again[k]) for k in top if k.endswith("weight"))


def test_a_checkpoint_resumes_with_other_frozen_levels(tmp_path):
    """The optimizer state has one layout whatever is frozen: a run saved without frozen
    levels resumes with them (a fine-tune checkpoint from before the preset froze them)."""
    samples = TrainingSet(*[[a] for a in synthetic_nuclei((64, 64), seed=1)],
                          validation_fraction=0.0)
    first = Trainer(UNet(1, 2, base_channels=4, depth=3), samples,
                    config(iterations=2, encoder_lr_scale=0.3))
    list(first.events())
    first.save(tmp_path / "run.pt")
    ckpt = load_checkpoint(tmp_path / "run.pt")
    resumed = Trainer(ckpt.model, samples,
                      config(iterations=4, encoder_lr_scale=0.3, frozen_levels=2),
                      checkpoint_state=ckpt)
    before = params(resumed.model)
    assert [e.step for e in resumed.events() if isinstance(e, LossReport)] == [3, 4]
    after = params(resumed.model)
    assert torch.equal(before["inc.block.0.weight"], after["inc.block.0.weight"])
    deep = "downs.2.conv.block.0.weight"
    assert not torch.equal(before[deep], after[deep])


def test_threads_are_restored_after_training(nuclei):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    before = torch.get_num_threads()
    seen = []
    for _ in Trainer(tiny(), samples, config(iterations=2, threads=before + 1)).events():
        seen.append(torch.get_num_threads())
    assert set(seen) == {before + 1} and torch.get_num_threads() == before


# -- the CLI's time budget -------------------------------------------------------------------
@pytest.fixture
def cli_data(tmp_path):
    import tifffile

    from napari_unet.core.model.checkpoint import save_model

    image, labels = synthetic_nuclei((64, 64), seed=5)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels.astype(np.uint16))
    tifffile.imwrite(tmp_path / "one_class.tif", np.where(labels > 0, 2, 0).astype(np.uint16))
    save_model(tmp_path / "tiny.pt", tiny(), {})
    return tmp_path


def cli_args(d, *extra):
    return ["train", "--image", str(d / "img.tif"), "--labels", str(d / "lab.tif"),
            "--model", str(d / "tiny.pt"), "--tile", "32", "--batch-size", "2",
            "--device", "cpu", "--no-plots", "--workers", "0", *extra]


def test_cli_minutes_stops_within_the_budget_and_saves(cli_data, capsys):
    from napari_unet.cli import main

    out = cli_data / "m.pt"
    # a budget far below one step: training ends at once, the model is still written
    assert main(cli_args(cli_data, "--out", str(out), "--minutes", "1e-6",
                         "--iterations", "1000")) == 0
    err = capsys.readouterr().err
    assert "time budget of 1e-06 min reached" in err and "finetune preset" in err
    assert load_checkpoint(out).meta.step < 1000
    # --minutes alone: the minutes are the budget, no step limit
    alone = cli_data / "alone.pt"
    assert main(cli_args(cli_data, "--out", str(alone), "--minutes", "1e-6")) == 0
    assert load_checkpoint(alone).meta.training["iterations"] is None


@pytest.mark.parametrize(("extra", "message"), [
    (["--minutes", "0"], "minutes must be a time budget"),
    (["--minutes", "1441"], "--minutes: must be 0 to 1440 minutes"),
    (["--workers", "many"], "--workers: must be a whole number or 'auto'"),
    (["--sparse", "--labels", "one_class.tif"], "only one class annotated"),
])
def test_cli_bad_budget_or_labels_write_nothing(cli_data, capsys, extra, message):
    from napari_unet.cli import main

    out = cli_data / "m.pt"
    args = cli_args(cli_data, "--out", str(out), *extra)
    if "--labels" in extra:  # the second --labels wins; point it at the file
        args[len(args) - 1] = str(cli_data / "one_class.tif")
    try:
        status = main(args)
    except SystemExit as stop:  # refused while the options are read
        status = stop.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_predicted_class_weights_look_at_planes_spread_over_a_budget(nuclei, monkeypatch):
    """Before the first step: a big stack is sampled (first and last plane here), not read
    whole."""
    import napari_unet.core.training.class_weights as class_weights_module

    image, instances = nuclei
    sparse = np.where(instances > 0, instances + 1, 1)
    sparse[:, 8:] = 0  # a fifth of each plane: sparse
    widths = (40, 41, 42, 43, 44)  # tells the planes apart
    samples = TrainingSet([image[:48, :w] for w in widths], [sparse[:48, :w] for w in widths],
                          convention="sparse", validation_fraction=0.0)
    assert len(samples.snapshot().train) == 5 and samples.snapshot().sparse
    seen = []
    forward = Trainer._forward_full
    monkeypatch.setattr(Trainer, "_forward_full",
                        lambda self, x: seen.append(x.shape[-1]) or forward(self, x))
    monkeypatch.setattr(class_weights_module, "PREDICTED_WEIGHTS_PIXELS", 2 * 48 * 42)
    weights = Trainer(tiny(), samples, config(iterations=1, class_weights="predicted")
                      ).class_weights()
    assert seen == [40, 44]
    assert len(weights) == 2 and min(weights) == 1.0
    seen.clear()
    monkeypatch.setattr(class_weights_module, "PREDICTED_WEIGHTS_PIXELS", 10**9)
    Trainer(tiny(), samples, config(iterations=1, class_weights="predicted")).class_weights()
    assert seen == list(widths)


def test_predicted_class_weights_for_sparse_labels(nuclei):
    image, instances = nuclei
    sparse = np.where(instances > 0, instances + 1, 1)
    sparse[:, 30:] = 0
    samples = TrainingSet([image], [sparse], convention="sparse", validation_fraction=0.0)
    assert samples.snapshot().sparse
    model = tiny()
    trainer = Trainer(model, samples, config(iterations=1, class_weights="predicted"))
    # by hand: the model's mean class probabilities over the training image
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(forward_full(model, samples.snapshot().train[0].image), 0)
    share = probs.sum(dim=(1, 2)).numpy()
    share /= share.sum()
    expected = np.minimum(np.sqrt(share.max() / share), 10.0)  # the rarer class: > 1
    events = list(trainer.events())
    assert trainer.class_weights() == pytest.approx(tuple(expected), rel=1e-4)
    assert any(isinstance(e, Message) and "class weights" in e.text for e in events)
    # dense labels: the same rule (a patch's balance is not the image's)
    dense = TrainingSet([image], [instances], validation_fraction=0.0)
    assert not dense.snapshot().sparse
    model.eval()
    with torch.no_grad():
        share = torch.softmax(forward_full(model, dense.snapshot().train[0].image), 0).sum(
            dim=(1, 2)).numpy()
    expected = np.minimum(np.sqrt(share.max() / share), 10.0)
    assert Trainer(model, dense, config(class_weights="predicted")).class_weights() == \
        pytest.approx(tuple(expected), rel=1e-4)
    assert TrainConfig.finetune().class_weights == "predicted"  # see the TrainConfig doc
    assert TrainConfig.fast().class_weights == "balanced"
    assert TrainConfig(class_weights="auto").class_weights == "balanced"
    with pytest.raises(ValueError, match="class_weights must be one of"):
        TrainConfig(class_weights="guess")


def test_distillation_keeps_the_unannotated_pixels_near_the_starting_model(nuclei):
    image, instances = nuclei
    sparse = np.where(instances > 0, instances + 1, 1)
    sparse[:, 32:] = 0  # painted: a strip on the left; the rest is unlabelled
    samples = TrainingSet([image], [sparse], convention="sparse", validation_fraction=0.0)
    start = tiny(seed=5)
    normalised = samples.snapshot().train[0].image  # the whole image (nothing held out)
    p0 = forward_full(start, normalised, torch.device("cpu")).softmax(0)[1]
    drift = {}
    for weight in (0.0, 5.0):
        trainer = Trainer(copy.deepcopy(start), samples, config(iterations=25, distill=weight))
        list(trainer.events())
        p = forward_full(trainer.model, normalised, torch.device("cpu")).softmax(0)[1]
        drift[weight] = float((p - p0)[:, 40:].abs().mean())  # far from the paint
    assert drift[5.0] < 0.6 * drift[0.0], drift
    assert TrainConfig.finetune().distill == TrainConfig.fast().distill == 0  # (keep_gaps)
    with pytest.raises(ValueError, match="distill"):
        TrainConfig(distill=-1.0)


def test_anchor_moves_the_weights_back_towards_the_start_after_each_step(nuclei):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    start = tiny(seed=4)
    free = Trainer(copy.deepcopy(start), samples, config(iterations=1))
    anchored = Trainer(copy.deepcopy(start), samples, config(iterations=1, anchor=0.25))
    list(free.events())
    list(anchored.events())
    # one step from the same weights on the same batch: the optimizer's step, then a quarter
    # of the way back
    for w0, w, got in zip(start.parameters(), free.model.parameters(),
                          anchored.model.parameters(), strict=True):
        torch.testing.assert_close(got, w0 + 0.75 * (w - w0))
    assert any((w != w0).any() for w0, w in zip(start.parameters(), free.model.parameters(),
                                                strict=True))
    assert TrainConfig.finetune().anchor == 0.01 and TrainConfig.fast().anchor == 0.0
    for bad in (-0.1, 0.6, float("nan")):
        with pytest.raises(ValueError, match="anchor"):
            TrainConfig(anchor=bad)


def test_the_run_gives_the_moving_average_of_its_weights(nuclei, tmp_path):
    image, instances = nuclei
    samples = TrainingSet([image], [instances], validation_fraction=0.0)
    decay = 0.6
    trainer = Trainer(tiny(seed=2), samples, config(iterations=3, average=decay))

    def weights() -> list[torch.Tensor]:
        return [v.detach().clone() for v in trainer.model.state_dict().values()
                if v.dtype.is_floating_point]

    # by hand: a = w0, then a += (1 - decay) * (w_k - a) after every step k
    expected = weights()
    for event in trainer.events():
        if not isinstance(event, Progress):
            continue
        live = weights()  # between steps the model holds the live weights ...
        expected = [a + (1 - decay) * (w - a) for a, w in zip(expected, live, strict=True)]
        with trainer.evaluation_weights():  # ... and the average where the run is looked at
            for got, want in zip(weights(), expected, strict=True):
                torch.testing.assert_close(got, want)
        for got, want in zip(weights(), live, strict=True):
            torch.testing.assert_close(got, want)  # the live weights are back
    assert any((a != w).any() for a, w in zip(expected, live, strict=True))
    for got, want in zip(weights(), expected, strict=True):  # after the run: the average
        torch.testing.assert_close(got, want)
    saved, _ = load_model(trainer.save(tmp_path / "m.pt"))
    for got, want in zip([v for v in saved.state_dict().values() if v.dtype.is_floating_point],
                         expected, strict=True):
        torch.testing.assert_close(got, want)
    assert TrainConfig.finetune().average == 0.995 and TrainConfig.fast().average == 0.0
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="average must be a decay"):
            TrainConfig(average=bad)


def test_the_held_out_part_chooses_the_kept_weights_by_ap_over_enough_whole_objects(nuclei):
    image, instances = nuclei
    # painted all over but few objects held out: figures, the last weights
    few = TrainingSet([image], [instances], validation_fraction=0.25)
    n = validation_chooses(few)[1].split(" has ")[1].split()[0]
    assert 0 < int(n) < MIN_CHOOSING_OBJECTS
    assert validation_plan(few, 50, True) == (
        True, False, f"the last weights are kept: the held-out part has {n} objects painted "
        f"all over (fewer than {MIN_CHOOSING_OBJECTS} to choose between steps)")
    assert validation_plan(few, 50, False) == (True, False, "")  # nothing kept: nothing to say
    assert validation_plan(few, 0, True) == (False, False, "")  # never scored
    # many objects, but the held-out part painted sparsely (IoU only): it cannot choose
    many, dense = synthetic_nuclei((192, 160), n_objects=80, radius=(5.0, 8.0), seed=4)
    sparse = np.where(dense > 0, dense + 1, 1)
    sparse[:, ::7] = 0  # unpainted columns everywhere
    partly = TrainingSet([many], [sparse], convention="sparse", validation_fraction=0.3)
    assert validation_is_meaningful(partly)[0]
    assert validation_plan(partly, 50, True) == (
        True, False, "the last weights are kept: the held-out part is not painted all over, "
        "so it cannot tell merged or split objects")
    assert validation_plan(dense_with_validation(), 50, True) == (True, True, "")

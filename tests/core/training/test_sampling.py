"""Annotation-aware patch sampling and the batch-preparation worker processes."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.runtime.spawning import GROUP_SIGNALS
from napari_unet.core.training.augment import AugmentConfig
from napari_unet.core.training.batch_workers import BatchWorkers
from napari_unet.core.training.sampling import BatchSpec, make_batch, restore_images, strip_images
from napari_unet.core.training.trainingset import TrainingSet

RAW = {"method": "none"}


def sparse_paint(labels, n_objects=3, ring=4, seed=0):
    """Like a user: a few whole objects (ids + 1) and a background ring around them (1)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.unique(labels[labels > 0]), size=n_objects, replace=False)
    chosen = np.isin(labels, ids)
    out = np.zeros(labels.shape, np.int32)
    out[ndi.binary_dilation(chosen, iterations=ring) & (labels == 0)] = 1
    out[chosen] = labels[chosen] + 1
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not running any more
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


# -- sampling --------------------------------------------------------------------------------
def test_sparse_labels_every_patch_holds_annotations_objects_and_background_alike():
    image, labels = synthetic_nuclei((256, 256), seed=2)
    sparse = sparse_paint(labels, n_objects=3)
    samples = TrainingSet([image], [sparse], convention="sparse", validation_fraction=0.0)
    snap = samples.snapshot()
    assert snap.sparse and snap.coverage < 0.1
    rng = np.random.default_rng(0)
    centred_on_object = 0
    for _ in range(300):
        _, target, ignore = samples.sample_patch(rng, (32, 32))
        assert (~ignore).any()  # never a patch without a single annotated pixel
        centred_on_object += bool(target[16, 16] > 0 and not ignore[16, 16])
    # half of the centres on painted objects, half on painted background (+- sampling noise)
    assert 110 < centred_on_object < 190


def test_dense_labels_keep_some_patches_anywhere():
    image, labels = synthetic_nuclei((128, 128), seed=2)
    samples = TrainingSet([image], [labels], validation_fraction=0.0)
    assert not samples.snapshot().sparse
    # the old behaviour stays available with an explicit bias
    rng = np.random.default_rng(0)
    _, _, ignore = samples.sample_patch(rng, (16, 16), annotated_bias=0.0)
    assert ignore.shape == (16, 16)


def test_dense_labels_centre_half_the_patches_on_what_the_start_model_gets_wrong():
    # RAW and a ramp: a patch's centre pixel tells where it was cut
    image = np.arange(128 * 128, dtype=np.float32).reshape(128, 128)
    labels = np.zeros((128, 128), np.int32)
    labels[40:60, 40:60] = 1
    foreground = labels > 0
    foreground[100:104, 100:104] = True  # the model's one mistake: a 4x4 false object
    samples = TrainingSet([image], [labels], convention="dense", normalization=RAW,
                          validation_fraction=0.0)
    samples.set_background_hint(lambda plane: (np.zeros(plane.shape[-2:], bool), foreground))
    snap = samples.snapshot()
    mistake = foreground & (labels == 0)
    # the mistake and the painted pixels 2 px (in rows and columns) around it
    assert not snap.sparse and snap.n_wrong == ndi.binary_dilation(mistake, iterations=2).sum()
    rng = np.random.default_rng(0)
    near_the_mistake = 0
    for _ in range(400):
        patch, _, _ = samples.sample_patch(rng, (16, 16))
        row, col = divmod(int(patch[0, 8, 8]), 128)
        near_the_mistake += bool(98 <= row < 106 and 98 <= col < 106)
    # half of them (+- sampling noise); uniform centring would put 0.4 % there
    assert 160 < near_the_mistake < 240
    # sparse paint keeps its own rule, whatever the model gets wrong
    painted = np.zeros((128, 128), np.int32)
    painted[40:60, 40:60] = 2
    painted[0:10, 0:10] = 1
    painted[100:104, 100:104] = 1
    sparse = TrainingSet([image], [painted], convention="sparse", normalization=RAW,
                         validation_fraction=0.0)
    sparse.set_background_hint(lambda plane: (np.zeros(plane.shape[-2:], bool), foreground))
    assert sparse.snapshot().sparse and sparse.snapshot().n_wrong > 0
    centres = [divmod(int(sparse.sample_patch(rng, (16, 16))[0][0, 8, 8]), 128)
               for _ in range(200)]
    assert sum(40 <= r < 60 and 40 <= c < 60 for r, c in centres) > 70  # half on the object


def test_strip_and_restore_images_ship_each_image_once():
    image, labels = synthetic_nuclei((64, 64), seed=1)
    samples = TrainingSet([image], [labels], validation_fraction=0.0)
    known, cache = set(), {}
    first = strip_images(samples.snapshot(), known)
    assert first.train[0].plane.image is not None
    restore_images(first, cache)
    second = strip_images(samples.snapshot(), known)
    assert second.train[0].plane.image is None and second.validation == ()
    back = restore_images(second, cache)
    np.testing.assert_array_equal(back.train[0].image, samples.snapshot().train[0].image)


# -- worker processes ------------------------------------------------------------------------
def halves(flip):
    """Sparse labels: left half object (2), right half background (1), or mirrored."""
    lab = np.ones((32, 64), np.int32)
    lab[:, :32] = 2
    return lab[:, ::-1].copy() if flip else lab


def spec(batch=2):
    return BatchSpec(batch_size=batch, out_hw=(16, 16), margin=0, instances_mode=True,
                     num_classes=2, augment=AugmentConfig.none(), class_weights=None,
                     separate_touching=False)


def test_batches_are_made_here_until_a_worker_has_started():
    columns = np.tile(np.arange(64, dtype=np.float32), (32, 1))
    samples = TrainingSet([columns], [halves(False)], convention="sparse", normalization=RAW,
                          validation_fraction=0.0)
    sp = spec()
    with BatchWorkers(samples, sp, start=0, n_workers=1) as workers:
        first = workers.get(0, timeout=60)  # a spawned worker needs seconds: no waiting
        for a, b in zip(first, make_batch(samples.snapshot(), sp, 0), strict=True):
            np.testing.assert_array_equal(a, b)


def test_workers_match_in_process_batches_and_see_painted_labels():
    columns = np.tile(np.arange(64, dtype=np.float32), (32, 1))  # pixel value = column
    samples = TrainingSet([columns], [halves(False)], convention="sparse", normalization=RAW,
                          validation_fraction=0.0)
    sp = spec()
    with BatchWorkers(samples, sp, start=0, n_workers=2, prefetch=2) as workers:
        assert len(workers.pids) == 2
        assert workers.wait_ready(120) and workers.n_ready == 2
        for step in range(3):  # same data as the in-process maker: seeded by (seed, step)
            got = workers.get(step, timeout=60)
            want = make_batch(samples.snapshot(), sp, step)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
        # objects on the left before the update ...
        image, target, _ = workers.get(3, timeout=60)
        np.testing.assert_array_equal(target, (image[:, 0] < 32).astype(np.int64))
        samples.update(0, halves(True))  # the user repaints while training runs
        # ... steps already requested may still use the old labels; later ones use the new
        for step in range(4, 12):
            image, target, _ = workers.get(step, timeout=60)
        np.testing.assert_array_equal(target, (image[:, 0] >= 32).astype(np.int64))
    assert wait_gone(workers.pids) == []


def test_workers_leave_the_group_stop_signals_to_their_parent():
    """Ctrl-C, SIGTERM and SIGHUP reach the whole process group; a worker that died of them
    would make the trainer's next get() fail before the trainer saw its own signal and saved."""
    image, labels = synthetic_nuclei((48, 48), seed=1)
    samples = TrainingSet([image], [labels], validation_fraction=0.0)
    spec = BatchSpec(batch_size=1, out_hw=(16, 16), margin=0, instances_mode=True,
                     num_classes=2)
    with BatchWorkers(samples, spec, start=0, n_workers=1) as workers:
        assert workers.wait_ready(120)
        (pid,) = workers.pids
        for sig in GROUP_SIGNALS:
            os.kill(pid, sig)
        time.sleep(1.0)
        assert alive(pid)
        for step in range(3):
            expected = make_batch(samples.snapshot(), spec, step)
            got = workers.get(step, timeout=60)
            assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert wait_gone([pid]) == []  # close() still ends it (a kill after the polite request)


def test_workers_end_on_close_and_a_worker_error_is_raised():
    image, labels = synthetic_nuclei((48, 48), seed=1)
    samples = TrainingSet([image], [labels], validation_fraction=0.0)
    bad = BatchSpec(batch_size=1, out_hw=(16, 16), margin=0, instances_mode=True,
                    num_classes=2, class_weights=(1.0,))  # one weight for two classes: fails
    workers = BatchWorkers(samples, bad, start=0, n_workers=1)
    pids = workers.pids
    assert workers.wait_ready(120)
    with pytest.raises(RuntimeError, match="preparing the batch of step 0 failed"):
        workers.get(0, timeout=60)
    workers.close()
    workers.close()  # idempotent
    assert wait_gone(pids) == []
    with pytest.raises(RuntimeError, match="closed"):
        workers.get(1)
    with pytest.raises(ValueError, match="fork is unsafe"):
        BatchWorkers(samples, bad, 0, 1, start_method="fork")


def test_stop_close_and_interrupt_end_the_workers():
    import torch

    from napari_unet.core.model.unet import UNet
    from napari_unet.core.training.config import TrainConfig
    from napari_unet.core.training.trainer import Trainer

    image, labels = synthetic_nuclei((64, 64), seed=1)
    samples = TrainingSet([image], [labels], validation_fraction=0.0)
    torch.manual_seed(0)
    cfg = TrainConfig.fast(iterations=1000, tile_size=32, batch_size=1, workers=1,
                           validate_every=0, device="cpu")
    trainer = Trainer(UNet(1, 2, base_channels=4, depth=2), samples, cfg)
    # Stop (napari's worker.quit() stops pulling): the dock then calls close()
    events = trainer.events()
    next(events)
    pids = trainer.worker_pids
    assert len(pids) == 1
    trainer.close()
    assert wait_gone(pids) == [] and trainer.worker_pids == []
    # KeyboardInterrupt / closing the generator: its clean-up ends the workers
    events = trainer.events()
    next(events)
    pids = trainer.worker_pids
    events.close()
    assert wait_gone(pids) == []
    step = trainer.step
    # a new run continues where the last one stopped
    next(trainer.events())
    assert trainer.step == step + 1
    trainer.close()


def test_no_orphans_when_the_training_process_is_killed(tmp_path):
    # No torch in the child: the point is the workers, and torch takes long to import.
    script = textwrap.dedent("""
        import os, signal
        import numpy as np
        from napari_unet.core.training.batch_workers import BatchWorkers
        from napari_unet.core.runtime.spawning import GROUP_SIGNALS
        from napari_unet.core.training.sampling import BatchSpec
        from napari_unet.core.training.trainingset import TrainingSet

        if __name__ == "__main__":
            image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
            labels = np.ones((64, 64), np.int32)
            labels[20:40, 20:40] = 2
            samples = TrainingSet([image], [labels], convention="sparse",
                                  validation_fraction=0.0)
            spec = BatchSpec(batch_size=1, out_hw=(32, 32), margin=0, instances_mode=True,
                             num_classes=2)
            workers = BatchWorkers(samples, spec, start=0, n_workers=2)
            assert workers.wait_ready(240)
            workers.get(0)
            print(" ".join(map(str, workers.pids)), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)  # no clean-up of our own runs
        """)
    path = tmp_path / "run.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -15, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    assert wait_gone(pids) == []


def test_workers_started_from_a_script_without_a_main_guard_do_not_run_it_again(
        unguarded_script):
    # a napari script without `if __name__ == "__main__":` (most are) must not be run again
    # in each batch worker (it would open a viewer there; the worker would die starting)
    out = unguarded_script(
        "import numpy as np\n"
        "from napari_unet.core.training.augment import AugmentConfig\n"
        "from napari_unet.core.training.batch_workers import BatchWorkers\n"
        "from napari_unet.core.training.sampling import BatchSpec\n"
        "from napari_unet.core.training.trainingset import TrainingSet\n"
        "lab = np.ones((32, 64), np.int32); lab[:, :32] = 2\n"
        "samples = TrainingSet([np.random.rand(32, 64).astype(np.float32)], [lab],\n"
        "                      convention='sparse', normalization={'method': 'none'},\n"
        "                      validation_fraction=0.0)\n"
        "spec = BatchSpec(batch_size=2, out_hw=(16, 16), margin=0, instances_mode=True,\n"
        "                 num_classes=2, augment=AugmentConfig.none(), class_weights=None,\n"
        "                 separate_touching=False)\n"
        "with BatchWorkers(samples, spec, start=0, n_workers=1) as workers:\n"
        "    print(workers.wait_ready(60), workers.get(0, timeout=60)[0].shape, flush=True)\n")
    assert out.split()[0] == "True"  # the worker started and took requests

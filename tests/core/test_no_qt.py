import json
import subprocess
import sys


def test_core_imports_no_gui_modules():
    code = (
        "import sys, json, pkgutil, importlib, napari_unet.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('napari_unet.core.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'qtpy','PyQt5','PyQt6','PySide2','PySide6','magicgui','napari','vispy'}]\n"
        "print(json.dumps(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

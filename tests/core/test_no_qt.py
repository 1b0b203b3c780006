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


def test_what_the_docks_job_process_imports_needs_no_gui_modules():
    # the job process unpickles the docks' jobs and their arguments: importing Qt or napari
    # there would cost seconds and a GUI stack in a process that shows nothing
    from napari_unet._widgets._jobs import PROCESS_PRELOAD

    code = (
        "import sys, json, importlib\n"
        f"for name in {list(PROCESS_PRELOAD)!r} + ['napari_unet._widgets.model_spec']:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'qtpy','PyQt5','PyQt6','PySide2','PySide6','magicgui','napari','vispy','superqt'}]\n"
        "print(json.dumps(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

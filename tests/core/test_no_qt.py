import json
import subprocess
import sys

GUI_PACKAGES = {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "napari", "vispy",
                "superqt"}


def gui_modules_after(imports: str) -> list[str]:
    """The GUI modules a fresh interpreter has loaded after running ``imports``."""
    code = (f"{imports}\nimport sys, json\n"
            f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {GUI_PACKAGES!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_imports_no_gui_modules():
    assert gui_modules_after(
        "import pkgutil, importlib, napari_unet.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'napari_unet.core.'):\n"
        "    importlib.import_module(m.name)") == []


def test_what_the_docks_job_process_imports_needs_no_gui_modules():
    # the job process unpickles the docks' jobs and their arguments: importing Qt or napari
    # there would cost seconds and a GUI stack in a process that shows nothing
    from napari_unet._widgets._jobs import PROCESS_PRELOAD

    names = [*PROCESS_PRELOAD, "napari_unet._widgets.model_spec"]
    assert gui_modules_after(f"import importlib\nfor name in {names!r}:\n"
                             "    importlib.import_module(name)") == []

import pytest


@pytest.fixture(autouse=True)
def dock_settings_file(tmp_path, monkeypatch):
    """Each test reads and writes its own dock settings file, never the user's."""
    from napari_unet._widgets.settings import ENV_VAR

    path = tmp_path / "settings" / "docks.ini"
    monkeypatch.setenv(ENV_VAR, str(path))
    return path


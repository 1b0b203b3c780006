"""Setting declarations: what they hold, and the docs table made from them."""

from __future__ import annotations

import dataclasses

import pytest

from napari_unet.core.settings import Setting, declared, setting, settings_of, settings_table


@dataclasses.dataclass(frozen=True)
class Job:
    size: int | None = setting(None, label="size", unit="px", kind="int", flag="--size",
                               none_text="auto", help="How   big.\n It is.")
    mode: str = setting("a", label="mode", choices=(("a", "first"), ("b", "second")),
                        advanced=True, help="Which one.")
    on: bool = setting(True, label="switch", dock=False, help="On or off.")
    hidden: float = 1.5  # not declared: no control, option or row


def test_declarations_keep_defaults_and_describe_the_setting():
    assert Job() == Job(None, "a", True, 1.5)
    items = settings_of(Job)
    assert [i.name for i in items] == ["size", "mode", "on"]
    size, mode, on = (i.setting for i in items)
    assert (size.kind, mode.kind, on.kind) == ("int", "choice", "bool")
    assert size.help == "How big. It is."  # white space folded
    assert mode.choices == (("a", "first"), ("b", "second")) and mode.advanced
    assert size.text_of(None) == "auto" and mode.text_of("b") == "second"
    assert on.text_of(False) == "off" and Setting("x", "y", "float").text_of(0.25) == "0.25"
    assert declared(Job, "on").default is True
    with pytest.raises(KeyError, match="Job.hidden is not a declared setting"):
        declared(Job, "hidden")
    with pytest.raises(ValueError, match="kind must be one of"):
        Setting("x", "y", "number")
    with pytest.raises(ValueError, match="a choice needs choices"):
        Setting("x", "y", "choice")


def test_the_docs_table_has_a_row_per_setting():
    table = settings_table(Job).splitlines()
    assert table[2] == "| size (px) | `--size` | auto | How big. It is. |"
    assert table[3] == "| mode * | (Python only) | first | Which one. |"
    assert table[4] == "| switch | (Python only) | on | On or off. |"
    assert len(table) == 5


def test_number_or_a_word():
    from napari_unet.core.settings import number_or

    parse = number_or("auto", int, "a whole number")
    assert parse("auto") == "auto" and parse("3") == 3
    with pytest.raises(ValueError, match="must be a whole number or 'auto', got 'many'"):
        parse("many")

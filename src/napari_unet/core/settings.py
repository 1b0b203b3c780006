"""How a setting is declared once, next to the job it configures.

A field of a job's settings dataclass (``PredictConfig``, ``TrainConfig``) is declared with
:func:`setting`: its default plus what a person needs to use it (the label a dock shows, help in
plain words, a range or choices, the command-line flag, whether it is an advanced setting). The
command-line options (``_cli_settings``), the dock controls and their tooltips (``_widgets``)
and the settings tables of the docs (:func:`settings_table`) are generated from these
declarations, so a new setting is one declaration.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

KINDS = ("int", "float", "bool", "choice", "text")
_UNSET = object()


@dataclass(frozen=True)
class Setting:
    """What a person sees of one setting.

    ``kind`` is one of :data:`KINDS`; ``choices`` are ``(value, text)`` pairs (the text is what
    a dock shows); ``none_text`` says what None means where a number may be left out ("auto",
    "no limit"); ``flag`` is the command-line option (None: not on the command line) and
    ``aliases`` are older spellings it still accepts without showing them; ``dock`` False keeps
    it out of the docks (set from the layer, or only for scripts); ``advanced`` settings are
    folded away in the docks; ``dock_default`` is where a dock starts when that differs from
    the job's default (a person thinks "train for 3 minutes", not "500 steps"); ``elsewhere``
    says how the commands and docks offer a setting that has no generated option or control
    (an output file, the layer's scale).

    ``minimum`` and ``maximum`` are the one bound of a number, for every caller: the docks'
    range, the command-line option's and the Python API's (:meth:`refusal`). Where ``none_text``
    is set, the docks show the minimum as that text (None); a job's own checks may refuse the
    minimum itself (a step count of 0).
    """

    label: str
    help: str
    kind: str
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    choices: tuple[tuple[Any, str], ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    decimals: int = 2
    unit: str = ""
    none_text: str | None = None
    advanced: bool = False
    dock: bool = True
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    dock_default: Any = _UNSET
    elsewhere: str = ""

    #: ``dock_default`` when the docks start where the job's default starts.
    UNSET: ClassVar[object] = _UNSET

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"setting {self.label!r}: a choice needs choices")

    def text_of(self, value: Any) -> str:
        """How a value reads for a person (a choice's text, ``none_text`` for None)."""
        for choice, text in self.choices:
            if choice == value and type(choice) is type(value):
                return text
        if value is None:
            return self.none_text or "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    def refusal(self, value: Any) -> tuple[type[Exception], str] | None:
        """Why the declaration refuses ``value`` (its kind, its range), as the error type and
        words without the setting's name ("must be 1 to 10000 px, got 1e+09"); None when it
        passes. None passes; so do values of other types a job allows (a tile size ``(H, W)``,
        "auto"): the job's own checks judge them."""
        if value is None:
            return None
        if self.kind == "bool":
            if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's bool too
                return None
            return TypeError, f"must be True or False, got {value!r} ({type(value).__name__})"
        if self.kind in ("int", "float") and isinstance(value, tuple):  # e.g. a tile's (H, W)
            return next(filter(None, map(self.refusal, value)), None)
        if self.kind not in ("int", "float") or isinstance(value, bool) \
                or not isinstance(value, Real):
            return None
        if not math.isfinite(value):
            return ValueError, f"must be a finite number, got {value!r}"
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if low <= value <= high:
            return None
        unit = f" {self.unit}" if self.unit else ""
        if self.maximum is None:
            bound = f"at least {_number(low)}{unit}"
        elif self.minimum is None:
            bound = f"at most {_number(high)}{unit}"
        else:
            bound = f"{_number(low)} to {_number(high)}{unit}"
        given = value if isinstance(value, Integral) else f"{float(value):g}"
        return ValueError, f"must be {bound}, got {given}"


def _number(value: float) -> str:
    """A bound or a value as a person reads it: 10000, 0.5, 1e+09."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{float(value):g}"


def check_declared(config: Any) -> None:
    """Refuse a settings dataclass whose values its declarations refuse (:meth:`Setting.refusal`):
    ``TypeError``/``ValueError`` naming the field, e.g. "object_diameter must be 1 to 10000 px,
    got 1e+09". Settings dataclasses call it at the end of ``__post_init__``, after their own
    checks with more particular words."""
    for item in settings_of(type(config)):
        refused = item.setting.refusal(getattr(config, item.name))
        if refused is not None:
            error, words = refused
            raise error(f"{item.name} {words}")


def setting(default: Any = dataclasses.MISSING, *, label: str, help: str,
            kind: str | None = None, choices: Sequence[Any] = (),
            default_factory: Any = dataclasses.MISSING, **look: Any) -> Any:
    """A dataclass field with its :class:`Setting` in the field's metadata.

    ``kind`` defaults from the default's type (a bool, an int, a float, else text; choices make
    it a choice). ``choices`` may be plain values or ``(value, text)`` pairs.
    """
    pairs = tuple(c if isinstance(c, tuple) and len(c) == 2 else (c, str(c)) for c in choices)
    if kind is None:
        kind = "choice" if pairs else _kind_of(default)
    described = Setting(label=label, help=" ".join(help.split()), kind=kind, choices=pairs,
                        **look)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"setting": described})


def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    return "text"


def number_or(word: str, cast: type, what: str) -> Callable[[str], Any]:
    """A parser for a setting typed as text: ``word`` (e.g. "auto") or a number made by
    ``cast``, refused in words that name ``what`` ("a number of pixels")."""

    def parse(text: str) -> Any:
        if text == word:
            return word
        try:
            return cast(text)
        except ValueError:
            raise ValueError(f"must be {what} or {word!r}, got {text!r}") from None

    return parse


@dataclass(frozen=True)
class Declared:
    """One declared field: its name in the dataclass, its default and its :class:`Setting`."""

    name: str
    default: Any
    setting: Setting


def settings_of(cls: type) -> list[Declared]:
    """The declared settings of a settings dataclass, in declaration order."""
    declared = []
    for f in dataclasses.fields(cls):
        described = f.metadata.get("setting")
        if described is None:
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        declared.append(Declared(f.name, default, described))
    return declared


def declared(cls: type, name: str) -> Declared:
    """The declaration of field ``name`` of ``cls``; ``KeyError`` naming it when undeclared."""
    for item in settings_of(cls):
        if item.name == name:
            return item
    raise KeyError(f"{cls.__name__}.{name} is not a declared setting")


def settings_table(cls: type, defaults: dict[str, Any] | None = None) -> str:
    """A Markdown table of ``cls``'s settings for the docs: the dock's label, the command-line
    option, the default, and the help. ``defaults`` overrides shown defaults (a dock's own)."""
    rows = ["| setting | option | default | what it does |", "|---|---|---|---|"]
    for item in settings_of(cls):
        s = item.setting
        default = (defaults or {}).get(item.name, item.default)
        option = f"`{s.flag}`" if s.flag else s.elsewhere or "(Python only)"
        label = s.label + (f" ({s.unit})" if s.unit else "") + (" *" if s.advanced else "")
        rows.append(f"| {label} | {option} | {s.text_of(default)} | {s.help} |")
    return "\n".join(rows) + "\n"


__all__ = ["KINDS", "Declared", "Setting", "check_declared", "declared", "number_or", "setting",
           "settings_of", "settings_table"]

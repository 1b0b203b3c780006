"""Command-line options generated from the setting declarations (``core.settings``).

``add_setting_options(parser, PredictConfig)`` adds one option per declared setting that has a
flag, with the declaration's help and the default in words; older spellings (``aliases``) are
accepted but not shown. Every option defaults to "not given", and :func:`settings_from_args`
passes on only what was given, so the job's own defaults apply otherwise: the command line
starts where the docks and the Python API start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .core.settings import Declared, settings_of

_ON_OFF = {None, True, False}


def _typed(parse: Callable[[str], Any], item: Declared) -> Callable[[str], Any]:
    """An argparse type that reports a refused value in the setting's words: what ``parse``
    refuses, and a number outside the declared range (the one bound the docks and the Python
    API keep too)."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        refused = item.setting.refusal(value)
        if refused is not None:
            raise argparse.ArgumentTypeError(refused[1])
        return value

    convert.__name__ = item.setting.label
    return convert


def _is_on_off(item: Declared) -> bool:
    s = item.setting
    return s.kind == "bool" or (s.kind == "choice" and {v for v, _ in s.choices} == _ON_OFF
                                and len(s.choices) == 3)


def option_kwargs(item: Declared) -> dict[str, Any]:
    """The ``add_argument`` keywords of one declared setting (without help)."""
    s = item.setting
    kwargs: dict[str, Any] = dict(dest=item.name, default=None)
    if _is_on_off(item):
        kwargs["action"] = argparse.BooleanOptionalAction
        return kwargs
    if s.parse is not None:
        kwargs["type"] = _typed(s.parse, item)
    elif s.kind == "choice":
        kwargs["choices"] = [v for v, _ in s.choices]
    elif s.kind in ("int", "float"):
        kwargs["type"] = _typed(int if s.kind == "int" else float, item)
    if s.metavar:
        kwargs["metavar"] = s.metavar
    elif s.kind in ("int", "float"):
        kwargs["metavar"] = s.unit.upper() if s.unit else "N"
    return kwargs


def option_help(item: Declared, default: Any = None) -> str:
    """The declaration's help with its default in words (``%`` escaped for argparse);
    ``default`` is a command's own default, as words."""
    s = item.setting
    if default is None:
        default = s.text_of(item.default)
    return f"{s.help} (default: {default})".replace("%", "%%")


def add_setting_options(parser: argparse.ArgumentParser, cls: type,
                        exclude: Iterable[str] = (),
                        defaults: Mapping[str, Any] | None = None,
                        only: Iterable[str] | None = None) -> None:
    """One option for each declared setting of ``cls`` that has a flag (not in ``exclude``).
    ``defaults`` are a command's own defaults where they differ from the job's, as the help
    shows them (the command applies them, e.g. with :func:`settings_from_args`); ``only``
    keeps just the settings named."""
    skip = set(exclude)
    keep = None if only is None else set(only)
    for item in settings_of(cls):
        flag = item.setting.flag
        if flag is None or item.name in skip or (keep is not None and item.name not in keep):
            continue
        kwargs = option_kwargs(item)
        shown = (defaults or {}).get(item.name)
        parser.add_argument(flag, help=option_help(item, None if shown is None else str(shown)),
                            **kwargs)
        for alias in item.setting.aliases:
            parser.add_argument(alias, help=argparse.SUPPRESS, **kwargs)


def settings_from_args(args: argparse.Namespace, cls: type, exclude: Iterable[str] = (),
                       defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The given options of ``cls``'s settings as keyword arguments of ``cls``, with the
    command's own ``defaults`` for those not given."""
    skip = set(exclude)
    given = {item.name: getattr(args, item.name) for item in settings_of(cls)
             if item.setting.flag is not None and item.name not in skip
             and getattr(args, item.name, None) is not None}
    return {**(defaults or {}), **given}


def in_option_words(text: str, options: Mapping[str, str]) -> str:
    """A job's message in the words of the command line: a message that begins with a setting's
    name ("object_diameter must be ...", "iterations must be ...") begins with its option
    instead ("--diameter must be ..."). ``options`` maps the command's declared settings to
    their options (:func:`declared_options`)."""
    name, space, rest = text.partition(" ")
    flag = options.get(name)
    return f"{flag}{space}{rest}" if flag and space else text


def declared_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The declared settings that ``parser`` offers, by field name, with their option."""
    from .core.inference.config import PredictConfig
    from .core.training.config import TrainConfig

    offered = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    names = {item.name for cls in (PredictConfig, TrainConfig) for item in settings_of(cls)
             if item.setting.flag}
    return {name: flag for name, flag in offered.items() if name in names}


__all__ = ["add_setting_options", "declared_options", "in_option_words", "option_help",
           "option_kwargs", "settings_from_args"]

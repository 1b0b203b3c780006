"""Command line: ``napari-unet train | predict | batch | eval | export``.

Each subcommand lives in its own ``napari_unet._cli_<name>`` module exposing
``add_arguments(parser)`` and ``run(args) -> int``; they are imported only when used, so
``napari-unet --help`` starts without importing torch. Shared options and helpers live in
``napari_unet._cli_common``.

The contract: bad input (``ValueError``, ``TypeError``, ``OSError``) ends with exit status 2 and
one line on stderr; Ctrl-C and SIGTERM end with status 130 and one line (commands that can
save work, like ``train``, save it first); anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

# name -> (module, one-line help): a new command is one entry here plus its module.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("napari_unet._cli_train", "fine-tune or train a U-Net on image/label pairs"),
    "predict": ("napari_unet._cli_predict", "segment one image with overlap-tile prediction"),
    "batch": ("napari_unet._cli_batch", "segment a folder of TIFF stacks"),
    "eval": ("napari_unet._cli_eval", "score a model on image/label pairs (IoU, Dice, AP)"),
    "export": ("napari_unet._cli_export", "write a model as a BioImage Model Zoo package"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="napari-unet",
        description="U-Net segmentation (Ronneberger et al. 2015): "
                    + ", ".join(COMMANDS) + ".",
        allow_abbrev=False,  # "--channel 1" must never be read as "--channel-axis 1"
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        import_module(module).add_arguments(p)
    parser.set_defaults(commands=sub.choices)
    return parser


def error_line(err: BaseException, command: argparse.ArgumentParser) -> str:
    """Bad input as one line in the command line's words: a message that begins with a
    setting's name begins with its option (``object_diameter`` -> ``--diameter``), and an output
    that is already there is replaced with ``--overwrite`` (not the Python keyword)."""
    from ._cli_common import OVERWRITE_HINT, one_line
    from ._cli_settings import declared_options, in_option_words
    from .core.io.outputs import OutputExists

    if isinstance(err, OutputExists):
        err = err.with_hint(OVERWRITE_HINT)
    return in_option_words(one_line(err), declared_options(command))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ._cli_common import debug, signals_as_interrupt

    prefix = f"napari-unet {args.command}"
    with signals_as_interrupt():
        try:
            module = import_module(COMMANDS[args.command][0])
            return int(module.run(args) or 0)
        except (ValueError, TypeError, OSError) as err:  # bad input: one clear line
            if debug():
                raise
            print(f"{prefix}: error: {error_line(err, args.commands[args.command])}",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: whatever could be saved was saved
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

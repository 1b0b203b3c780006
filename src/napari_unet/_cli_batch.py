"""``napari-unet batch``: segment a folder (or glob) of images into a folder of label TIFFs.

The exit status is the number of files that failed (at most 100), 0 when all went well, and 2
for bad arguments (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys

from ._cli_predict import add_common_arguments, load, predict_config_kwargs

MAX_STATUS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder, glob pattern ('in/*.tif') or file")
    parser.add_argument("--output", required=True, help="folder for the label TIFFs")
    add_common_arguments(parser)
    parser.add_argument("--probabilities", action="store_true",
                        help="also write <name>_probabilities.tif")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (default: skip them, so runs resume)")
    parser.add_argument("--suffix", default="", help="appended to each output name")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="dask.distributed scheduler to run the files on")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.batch import BatchSummary, FileDone, SliceProgress, batch_segment
    from .core.events import Message, Progress

    model, meta = load(args.model)
    client = None
    if args.scheduler:
        from distributed import Client

        try:
            client = Client(args.scheduler, timeout="20s")
        except OSError as err:
            raise ValueError(
                f"cannot reach the dask scheduler at {args.scheduler!r}: {err}") from None
    job = batch_segment(model, args.input, args.output, meta=meta, client=client,
                        overwrite=args.overwrite, probabilities=args.probabilities,
                        suffix=args.suffix, **predict_config_kwargs(args))
    summary = None
    files = tqdm(desc="files", unit="file", file=sys.stderr, position=0)
    slices = tqdm(desc="slices", unit="slice", file=sys.stderr, position=1, leave=False)
    try:
        for event in job:
            if isinstance(event, Progress):
                files.total = event.total
                files.n = event.step
                files.refresh()
            elif isinstance(event, SliceProgress):
                slices.set_description(event.path.name)
                slices.total = event.total
                slices.n = event.step
                slices.refresh()
            elif isinstance(event, FileDone) and event.status == "failed":
                tqdm.write(f"failed: {event.path}: {event.message}", file=sys.stderr)
            elif isinstance(event, Message):
                tqdm.write(f"note: {event.text}", file=sys.stderr)
            elif isinstance(event, BatchSummary):
                summary = event
    finally:
        slices.close()
        files.close()
        if client is not None:
            client.close()
    print(f"done {len(summary.done)}, skipped {len(summary.skipped)} (already there), "
          f"failed {len(summary.failed)}")
    for path, message in summary.failed:
        print(f"  {path}: {message}")
    return min(len(summary.failed), MAX_STATUS)

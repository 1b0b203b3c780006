"""``napari-unet batch``: segment a folder (or glob) of images into a folder of label TIFFs.

The exit status is the number of files that failed (at most 100), 0 when all went well, 2
for bad arguments (nothing is written then) and 130 when interrupted (Ctrl-C, SIGTERM): the
files finished so far are kept and a second run resumes after them. Temporary files that a
killed earlier run left in the output folder are removed first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._cli_common import add_out_argument, add_overwrite_argument
from ._cli_predict import add_common_arguments, predict_config_kwargs

MAX_STATUS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # required, checked in run(): argparse would not count the older spelling as given
    parser.add_argument("--image", metavar="IMAGES",
                        help="folder, glob pattern ('in/*.tif') or file of the images "
                             "(required)")
    parser.add_argument("--input", dest="image", help=argparse.SUPPRESS)  # older spelling
    add_out_argument(parser, "folder for the label TIFFs", metavar="FOLDER")
    add_common_arguments(parser)
    parser.add_argument("--probabilities", action="store_true",
                        help="also write the class probabilities, as <name>_probabilities.tif")
    add_overwrite_argument(parser, "outputs (default: skip them, so runs resume)")
    parser.add_argument("--suffix", default="", help="appended to each output name")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="dask.distributed scheduler to run the files on")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.events import BatchSummary, FileDone, Message, Progress, SliceProgress
    from .core.inference.batch import batch_segment
    from .core.io.outputs import clean_stale_temps

    if args.image is None:
        raise ValueError("give the images to segment with --image (a folder, a glob pattern "
                         "or a file)")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; batch writes into a folder")
    if out_dir.is_dir():
        for stale in clean_stale_temps(out_dir):
            print(f"note: removed {stale.name}, left by an interrupted run", file=sys.stderr)
    client = None
    if args.scheduler:
        from .core.inference.distributed import connect_scheduler

        client = connect_scheduler(args.scheduler)
    # a model spec: batch_segment checks the outputs before it loads the model
    job = batch_segment(args.model, args.image, args.out, client=client,
                        overwrite=args.overwrite, probabilities=args.probabilities,
                        suffix=args.suffix, **predict_config_kwargs(args))
    summary = None
    counts = {"done": 0, "skipped": 0, "failed": 0}
    files = tqdm(desc="files", unit="file", file=sys.stderr, position=0)
    slices = tqdm(desc="file", unit="step", file=sys.stderr, position=1, leave=False)
    try:
        for event in job:
            if isinstance(event, Progress):
                files.total = event.total
                files.n = event.step
                files.refresh()
            elif isinstance(event, SliceProgress):
                slices.set_description(f"{event.path.name} {event.message}".strip())
                slices.total = event.total
                slices.n = event.step
                slices.refresh()
            elif isinstance(event, FileDone):
                counts[event.status] = counts.get(event.status, 0) + 1
                if event.status == "failed":
                    tqdm.write(f"failed: {event.path}: {event.message}", file=sys.stderr)
            elif isinstance(event, Message):
                tqdm.write(f"note: {event.text}", file=sys.stderr)
            elif isinstance(event, BatchSummary):
                summary = event
    except KeyboardInterrupt:
        job.close()  # the batch core finishes or removes the file it was writing
        slices.close()
        files.close()
        print(f"interrupted: done {counts['done']}, skipped {counts['skipped']}, failed "
              f"{counts['failed']}; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        job.close()
        slices.close()
        files.close()
        if client is not None:
            client.close()
    print(f"done {len(summary.done)}, skipped {len(summary.skipped)} (already there), "
          f"failed {len(summary.failed)}")
    for path, message in summary.failed:
        print(f"  {path}: {message}")
    return min(len(summary.failed), MAX_STATUS)

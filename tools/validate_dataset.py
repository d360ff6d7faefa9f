#!/usr/bin/env python
"""Check every file of registered audio-visual segmentation datasets.

Usage::

    python tools/validate_dataset.py avsbench_s4_train avsbench_s4_val ...
    python tools/validate_dataset.py --maskiges pre_SAM_mask avsbench_ms3_train  # + maskiges
    DETECTRON2_DATASETS=/data python tools/validate_dataset.py avsbench_avss_test

Prints one line per problem (``<dataset>: <file>: <problem>``, see
:mod:`avsegformer.data.validation` for what is checked) and a summary per dataset on stderr;
the exit status is 1 when anything is wrong.
"""

import argparse
import sys

from avsegformer.data.validation import validate_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="registered dataset names")
    parser.add_argument(
        "--check-wav",
        action="store_true",
        help="also check audio_wav_file_name where it differs from the audio the loader uses",
    )
    parser.add_argument(
        "--maskiges",
        default="",
        metavar="FOLDER",
        help="also check the maskiges in this folder (as INPUT.MASKIGE_FOLDER, e.g. pre_SAM_mask)",
    )
    args = parser.parse_args(argv)
    total = 0
    for name in args.names:
        problems, clips = validate_dataset(
            name, check_wav=args.check_wav, maskige_folder=args.maskiges
        )
        for line in problems:
            print(line)
        print(f"{name}: {clips} clips checked, {len(problems)} problems", file=sys.stderr)
        total += len(problems)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

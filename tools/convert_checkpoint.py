#!/usr/bin/env python
"""Convert an original checkpoint (AVSegFormer, MoDAT, COMBO, CATR) into a MODEL.WEIGHTS file.

    python tools/convert_checkpoint.py AVSegFormer_pvt2_s4.pth avsegformer_pvtv2_s4.pth
    python tools/convert_checkpoint.py MoDAT_pvt2_s4.pth modat_pvtv2_s4.pth
    python tools/convert_checkpoint.py COMBO_model_best.pth combo_R50_s4.pth
    python tools/convert_checkpoint.py S4_best.pth catr_pvtv2_s4.pth   # CATR: VGGish not included
    python tools/convert_checkpoint.py --keep-unused S4_best.pth catr_strict.pth  # STRICT_COMPAT

The family of the source (which original code wrote it) is told from its keys; a file of no
known family is refused. The output is ``{"model": state_dict, ...facts}`` and loads with no
missing keys into the matching ``configs/*`` model. Unknown entries are an error; groups the
original saves but never uses are dropped with a log line (``--keep-unused`` keeps them, for
CATR's ``MODEL.CATR.STRICT_COMPAT`` model, which builds them). The facts (backbone, number of
classes; for COMBO also the Siam-Encoder and the fusion type) say which config matches.
"""

import argparse
import logging

from avsegformer.checkpoint import checkpoint_families, convert_checkpoint_file


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"Known families: {', '.join(checkpoint_families())}.",
    )
    parser.add_argument("src", help="original checkpoint (.pth)")
    parser.add_argument("dst", help="converted checkpoint to write (.pth)")
    parser.add_argument(
        "--keep-unused",
        action="store_true",
        help="keep the entries the original saves but never uses (CATR: for a model built with "
        "MODEL.CATR.STRICT_COMPAT True)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert_checkpoint_file(args.src, args.dst, keep_unused=args.keep_unused)
    except (FileNotFoundError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SystemExit(f"error: {message}") from error


if __name__ == "__main__":
    main()

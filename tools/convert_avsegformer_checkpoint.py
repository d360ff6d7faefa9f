#!/usr/bin/env python
"""Alias of ``tools/convert_checkpoint.py``, which tells AVSegFormer checkpoints by their keys.

python tools/convert_avsegformer_checkpoint.py AVSegFormer_pvt2_s4.pth avsegformer_pvtv2_s4.pth
"""

import runpy
from pathlib import Path


def main(argv=None) -> None:
    tool = runpy.run_path(str(Path(__file__).with_name("convert_checkpoint.py")))
    tool["main"](argv)


if __name__ == "__main__":
    main()

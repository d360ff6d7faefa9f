"""Pure-Python install of the avsegformer package (metadata in pyproject.toml).

The deformable-attention extension is built separately from ops/ (see ops/README.md), so this
package installs on machines without a compiler or CUDA.
"""

from setuptools import setup

setup()

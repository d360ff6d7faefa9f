"""AVSegFormer's head initialisation, shared by the models built on its head."""

from torch import nn

from avsegformer.layers import MSDeformAttn

__all__ = ["init_head_parameters"]


def init_head_parameters(modules, *, level_embed: nn.Parameter):
    """The original head initialisation, in its order.

    1. xavier-uniform on every parameter with more than one dimension;
    2. every deformable attention re-runs its own initialisation;
    3. the level embedding is drawn from N(0, 1).
    """
    modules = [m for m in modules if m is not None]
    for module in modules:
        for param in module.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, MSDeformAttn):
                sub._reset_parameters()
    nn.init.normal_(level_embed)

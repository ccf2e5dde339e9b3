# Semantic FPN with DualToken-ViT-T; everything else as fpn_dualtoken_s_ade20k.py.
_base_ = './fpn_dualtoken_s_ade20k.py'

model = dict(backbone=dict(arch='tiny'), neck=dict(in_channels=[48, 96, 192]))

# RetinaNet + FPN with DualToken-ViT-T; everything else as retinanet_dualtoken_s.py.
_base_ = './retinanet_dualtoken_s.py'

model = dict(
    backbone=dict(arch='tiny'),
    neck=dict(in_channels=[48, 96, 192]))

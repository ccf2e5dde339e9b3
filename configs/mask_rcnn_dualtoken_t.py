# Mask R-CNN + FPN with DualToken-ViT-T; everything else as mask_rcnn_dualtoken_s.py.
_base_ = './mask_rcnn_dualtoken_s.py'

model = dict(backbone=dict(arch='tiny'), neck=dict(in_channels=[48, 96, 192]))

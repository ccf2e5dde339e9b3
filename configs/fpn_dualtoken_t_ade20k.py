# Semantic FPN with DualToken-ViT-T; everything else as fpn_dualtoken_s_ade20k.py.
_base_ = './fpn_dualtoken_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='tiny',
        # from T's ImageNet checkpoint (`python tools/train.py configs/dualtoken_t_in1k.py`),
        # not the S one of the base config
        init_cfg=dict(
            type='Pretrained',
            prefix='backbone.',
            checkpoint='work_dirs/dualtoken_t_in1k/epoch_300.pth')),
    neck=dict(in_channels=[48, 96, 192]))

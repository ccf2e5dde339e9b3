# mmseg's ADE20K dataset settings (512x512 crops) with the checks of
# mmdualtoken.datasets.transforms: a missing, truncated or undecodable training image or label
# map, or a label map that does not fit its image (size, values out of range), stops the run
# with one line naming the file. The test pipeline keeps mmcv's image loader and mmseg's
# LoadAnnotations, which the inferencers look up by name. Shared by the Semantic FPN and
# UperNet configs.
_base_ = 'mmseg::_base_/datasets/ade20k.py'

crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadCheckedSegMap', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=150),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=150),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

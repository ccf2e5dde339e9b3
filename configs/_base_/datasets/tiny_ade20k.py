# The generated tiny ADE20K set (data/tiny/ade/ADEChallengeData2016, written by
# tools/data/make_tiny_datasets.py): ADE20K's layout and first five classes, small images
# (128x128 crops), loaded in the main process, with the checks of
# mmdualtoken.datasets.transforms. Shared by the configs/tiny/*_ade20k_tiny.py configs, which
# list it after their real config and put its tiny_* settings in place of ADE20K's:
#     train_dataloader = _base_.tiny_train_dataloader
# (mmengine lets no two _base_ files set the same key, and the real config sets those).
tiny_data_root = 'data/tiny/ade/ADEChallengeData2016'
metainfo = dict(
    classes=('wall', 'building', 'sky', 'floor', 'tree'),
    palette=[[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3]])
tiny_crop_size = (128, 128)
tiny_train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),  # a bad image stops the run, named
    dict(type='LoadCheckedSegMap', reduce_zero_label=True),  # a bad label map too
    dict(type='CheckSegMap', num_classes=len(metainfo['classes'])),
    dict(type='RandomResize', scale=(160, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=tiny_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
tiny_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=len(metainfo['classes'])),
    dict(type='PackSegInputs')
]
tiny_train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=tiny_data_root, metainfo=metainfo, pipeline=tiny_train_pipeline))
tiny_val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=tiny_data_root, metainfo=metainfo, pipeline=tiny_test_pipeline))

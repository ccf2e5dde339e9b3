# configs/upernet_dualtoken_s_ade20k.py on the generated tiny ADE20K set with a short CPU
# schedule; the data settings are the same as in fpn_dualtoken_s_ade20k_tiny.py.
_base_ = '../upernet_dualtoken_s_ade20k.py'

data_root = 'data/tiny/ade/ADEChallengeData2016'
metainfo = dict(
    classes=('wall', 'building', 'sky', 'floor', 'tree'),
    palette=[[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3]])
crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),  # a bad image stops the run, named
    dict(type='LoadCheckedSegMap', reduce_zero_label=True),  # a bad label map too
    dict(type='CheckSegMap', num_classes=len(metainfo['classes'])),
    dict(type='RandomResize', scale=(160, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=len(metainfo['classes'])),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

auto_scale_lr = dict(base_batch_size=8)  # one process x 8 images

model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=5),
    auxiliary_head=dict(num_classes=5))

max_iters = 160
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=6e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=10, end=max_iters, by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
    # pictures of predicted masks over their images, written during validation to
    # <work_dir>/<timestamp>/vis_data/vis_image/
    visualization=dict(draw=True, interval=4))

# configs/retinanet_dualtoken_s.py on the generated tiny COCO set (data/tiny/coco, written by
# tools/data/make_tiny_datasets.py) with a few-minute CPU schedule. Only the data (images,
# classes, image size) and the schedule differ from the real config.
_base_ = ['../retinanet_dualtoken_s.py', '../_base_/datasets/tiny_coco.py']

data_root = _base_.tiny_data_root  # the tiny set: ../_base_/datasets/tiny_coco.py
image_scale = (256, 192)

train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),  # a bad image stops the run, named
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# the tiny set's loaders and evaluator with these pipelines
train_dataloader = _base_.tiny_train_dataloader
train_dataloader.dataset.pipeline = train_pipeline
val_dataloader = _base_.tiny_val_dataloader
val_dataloader.dataset.pipeline = test_pipeline
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_val_evaluator
test_evaluator = val_evaluator

model = dict(
    # from scratch (the backbone's default init), not from the ImageNet checkpoint the real
    # config fine-tunes from: the tiny run needs no pretraining
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3))

# schedule: 96 images / batch 4 = 24 iterations per epoch, 8 epochs (about 6 minutes here)
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=5e-4), clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=24),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        eta_min=1e-5,
        convert_to_iter_based=True)
]
auto_scale_lr = dict(base_batch_size=4)
randomness = dict(seed=0)  # the demo's figures repeat from run to run
default_hooks = dict(
    logger=dict(interval=6), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

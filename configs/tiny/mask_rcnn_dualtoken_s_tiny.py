# configs/mask_rcnn_dualtoken_s.py on the generated tiny COCO set (boxes and polygon masks)
# with a short CPU schedule; only data and schedule differ from the real config.
_base_ = ['../mask_rcnn_dualtoken_s.py', '../_base_/datasets/tiny_coco.py']

data_root = _base_.tiny_data_root  # the tiny set: ../_base_/datasets/tiny_coco.py
image_scale = (320, 256)
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),  # a bad image stops the run, named
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)))

max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
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
default_hooks = dict(
    logger=dict(interval=6), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

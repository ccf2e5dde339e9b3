# configs/dualtoken_s_in1k.py on the generated tiny ImageNet-layout set (data/tiny/imagenet,
# written by tools/data/make_tiny_datasets.py): four classes, 96x96 crops, a few-minute CPU
# schedule. Only the data and the schedule differ from the real config.
_base_ = '../dualtoken_s_in1k.py'

data_root = 'data/tiny/imagenet'
classes = ['red_disc', 'green_square', 'blue_stripes', 'yellow_checker']
bgr_mean = [103.53, 116.28, 123.675]
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),  # a bad image stops the run, named
    dict(type='RandomResizedCrop', scale=96, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=110, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=96),
    dict(type='PackInputs'),
]
dataset = dict(type='CustomDataset', data_root=data_root, classes=classes, _delete_=True)
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(dataset, ann_file='meta/train.txt', data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(dataset, ann_file='meta/val.txt', data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))  # four classes: top-5 is meaningless
test_evaluator = val_evaluator

data_preprocessor = dict(num_classes=4)
model = dict(head=dict(num_classes=4))

max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=8),
    dict(
        type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0, convert_to_iter_based=True)
]
auto_scale_lr = dict(base_batch_size=16)
default_hooks = dict(
    logger=dict(interval=4), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

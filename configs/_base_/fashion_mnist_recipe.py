# Fashion-MNIST (real 28x28 grey product photos, 10 classes) through mmpretrain's own
# FashionMNIST dataset, on a CPU: the recipe every model of docs/fashion_mnist.md gets, ours
# and its peers alike. Only the model differs: the backbone as its ImageNet config builds it
# (drop path, T's initialisation), its pooling and the head's in_channels.
# The files: python tools/data/prepare_fashion_mnist.py (Debian's dataset-fashion-mnist).
#
# Images are upsampled to 48x48 (bicubic), where the backbone's strides 8-32 leave 6x6 to 2x2
# token maps; random 48x48 crops of the 6-pixel zero-padded image and horizontal flips (the
# usual CIFAR/Fashion-MNIST augmentation at this scale). 48x48 and 4 epochs: the three runs
# of docs/fashion_mnist.md took 93 minutes one after the other on 2 CPU cores (its table).
# AdamW, lr 1e-3 at batch 128, weight decay 0.05 (none on norms, biases, 1-D parameters and
# global tokens), one warm-up epoch then cosine, label smoothing 0.1.
_base_ = ['mmpretrain::_base_/default_runtime.py', './reliability.py']

size = 48
data_root = 'data/fashion_mnist'
data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.0])  # the training set's
train_pipeline = [
    dict(type='Resize', scale=size, interpolation='bicubic'),
    dict(type='RandomCrop', crop_size=size, padding=size // 8),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='Resize', scale=size, interpolation='bicubic'), dict(type='PackInputs')]
dataset = dict(type='FashionMNIST', data_root=data_root, download=False)
# the decoded images are in memory and the transforms cheap: no loader workers on 2 cores
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(dataset, test_mode=False, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    dataset=dict(dataset, test_mode=True, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# one linear classifier on the pooled last stage, label smoothing 0.1
model = dict(
    type='ImageClassifier',
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

max_epochs = 4
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999)),
    # as the ImageNet recipe: no decay on the global tokens either (a key the peers lack)
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'backbone.global_tokens': dict(decay_mult=0.)}))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    # ends where training ends (mmengine's default end), also with another max_epochs
    dict(
        type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, convert_to_iter_based=True)
]
auto_scale_lr = dict(base_batch_size=128)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        interval=1,
        max_keep_ckpts=1,
        save_best='accuracy/top1',
        rule='greater'))

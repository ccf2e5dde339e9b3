auto_scale_lr = dict(base_batch_size=128)
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(on_nonfinite='stop', type='FiniteLossHook'),
]
custom_imports = dict(
    allow_failed_imports=False,
    imports=[
        'mmdualtoken',
        'mmdualtoken.engine',
        'mmdualtoken.datasets.transforms',
    ])
data_preprocessor = dict(
    mean=[
        72.94,
    ], num_classes=10, std=[
        90.0,
    ])
data_root = 'data/fashion_mnist'
dataset = dict(
    data_root='data/fashion_mnist', download=False, type='FashionMNIST')
default_hooks = dict(
    checkpoint=dict(
        _scope_='mmpretrain',
        interval=1,
        max_keep_ckpts=1,
        rule='greater',
        save_best='accuracy/top1',
        type='AtomicCheckpointHook'),
    logger=dict(_scope_='mmpretrain', interval=50, type='LoggerHook'),
    param_scheduler=dict(_scope_='mmpretrain', type='ParamSchedulerHook'),
    sampler_seed=dict(_scope_='mmpretrain', type='DistSamplerSeedHook'),
    timer=dict(_scope_='mmpretrain', type='IterTimerHook'),
    visualization=dict(
        _scope_='mmpretrain', enable=False, type='VisualizationHook'))
default_scope = 'mmpretrain'
env_cfg = dict(
    cudnn_benchmark=False,
    dist_cfg=dict(backend='nccl'),
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
launcher = 'none'
load_from = None
log_level = 'INFO'
max_epochs = 4
model = dict(
    backbone=dict(
        arch='xsmall',
        drop_path_rate=0.1,
        gap_before_final_norm=True,
        in_channels=1,
        out_indices=(3, ),
        type='EdgeNeXt'),
    head=dict(
        in_channels=192,
        loss=dict(
            label_smooth_val=0.1, mode='original', type='LabelSmoothLoss'),
        num_classes=10,
        type='LinearClsHead'),
    type='ImageClassifier')
optim_wrapper = dict(
    optimizer=dict(
        betas=(
            0.9,
            0.999,
        ), lr=0.001, type='AdamW', weight_decay=0.05),
    paramwise_cfg=dict(
        bias_decay_mult=0.0,
        custom_keys=dict({'backbone.global_tokens': dict(decay_mult=0.0)}),
        flat_decay_mult=0.0,
        norm_decay_mult=0.0))
param_scheduler = [
    dict(
        begin=0,
        by_epoch=True,
        convert_to_iter_based=True,
        end=1,
        start_factor=0.01,
        type='LinearLR'),
    dict(
        begin=1,
        by_epoch=True,
        convert_to_iter_based=True,
        eta_min=1e-05,
        type='CosineAnnealingLR'),
]
randomness = dict(deterministic=False, seed=None)
resume = False
size = 48
test_cfg = dict()
test_dataloader = dict(
    batch_size=256,
    dataset=dict(
        data_root='data/fashion_mnist',
        download=False,
        pipeline=[
            dict(interpolation='bicubic', scale=48, type='Resize'),
            dict(type='PackInputs'),
        ],
        test_mode=True,
        type='FashionMNIST'),
    num_workers=0,
    sampler=dict(shuffle=False, type='DefaultSampler'))
test_evaluator = dict(topk=(1, ), type='Accuracy')
test_pipeline = [
    dict(interpolation='bicubic', scale=48, type='Resize'),
    dict(type='PackInputs'),
]
train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=1)
train_dataloader = dict(
    batch_size=128,
    dataset=dict(
        data_root='data/fashion_mnist',
        download=False,
        pipeline=[
            dict(interpolation='bicubic', scale=48, type='Resize'),
            dict(crop_size=48, padding=6, type='RandomCrop'),
            dict(direction='horizontal', prob=0.5, type='RandomFlip'),
            dict(type='PackInputs'),
        ],
        test_mode=False,
        type='FashionMNIST'),
    num_workers=0,
    sampler=dict(shuffle=True, type='DefaultSampler'))
train_pipeline = [
    dict(interpolation='bicubic', scale=48, type='Resize'),
    dict(crop_size=48, padding=6, type='RandomCrop'),
    dict(direction='horizontal', prob=0.5, type='RandomFlip'),
    dict(type='PackInputs'),
]
val_cfg = dict()
val_dataloader = dict(
    batch_size=256,
    dataset=dict(
        data_root='data/fashion_mnist',
        download=False,
        pipeline=[
            dict(interpolation='bicubic', scale=48, type='Resize'),
            dict(type='PackInputs'),
        ],
        test_mode=True,
        type='FashionMNIST'),
    num_workers=0,
    sampler=dict(shuffle=False, type='DefaultSampler'))
val_evaluator = dict(topk=(1, ), type='Accuracy')
vis_backends = [
    dict(_scope_='mmpretrain', type='LocalVisBackend'),
]
visualizer = dict(
    _scope_='mmpretrain',
    type='UniversalVisualizer',
    vis_backends=[
        dict(type='LocalVisBackend'),
    ])
work_dir = 'work_dirs/fashion_mnist/edgenext-xsmall_fashion-mnist'

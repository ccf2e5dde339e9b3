# ImageNet-1k at 224 with LightViT's recipe (the paper trains DualToken-ViT as LightViT):
# 300 epochs; AdamW lr 1e-3 at total batch 1024 (8 x 128; --auto-scale-lr rescales it);
# weight decay 0.04, none on norms, biases, 1-D parameters and the global tokens; 20 linear
# warm-up epochs then cosine; RandAugment m9-mstd0.5, Mixup 0.2, CutMix 1.0, random erasing
# 0.25, label smoothing 0.1, bicubic resize (mmpretrain's Swin pipeline has exactly those
# augmentations). Drop path 0.1 is set in the backbone of each config.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    './reliability.py',
]
# custom_imports and custom_hooks (RandomStateHook, FiniteLossHook): ./reliability.py
# kill-safe saves; of the 300 epochs' checkpoints (about 160 MB each with the optimizer
# state) the last 3 are kept, and the best top-1 (best_accuracy_top1_epoch_N.pth)
default_hooks = dict(
    checkpoint=dict(
        type='AtomicCheckpointHook',
        interval=1,
        max_keep_ckpts=3,
        save_best='accuracy/top1',
        rule='greater'))

# Head: the backbone averages the last stage and applies its final norm
# (gap_before_final_norm), then one linear classifier. We do not add LightViT's
# Linear(C -> 1280) + LN + GELU neck: the paper's 0.5 G / 1.0 G budget is the backbone's,
# and that neck would add ~1.5 M params to the head.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DualTokenViT',
        arch='small',
        out_indices=(2, ),
        gap_before_final_norm=True,
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=224,
        init_cfg=None,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.2),
                             dict(type='CutMix', alpha=1.0)]))

# mmpretrain's Swin training pipeline, images loaded by LoadCheckedImageFromFile
# (mmdualtoken.datasets.transforms): a missing, truncated or undecodable image stops the run
# with one line naming the file. The test pipeline keeps mmcv's loader, which the
# inferencers look up by name.
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
# x 8 processes = 1024. Loaders that keep one GPU fed at 128 images with RandAugment: 8
# workers per process (tools/slurm_train.sh asks for 8 + 1 CPUs per task from this number),
# kept alive between epochs, batches in pinned memory for asynchronous copies to the GPU
loader = dict(num_workers=8, persistent_workers=True, pin_memory=True)
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline), **loader)
val_dataloader = dict(batch_size=128, **loader)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(weight_decay=0.04),
    paramwise_cfg=dict(custom_keys={'backbone.global_tokens': dict(decay_mult=0.0)}))

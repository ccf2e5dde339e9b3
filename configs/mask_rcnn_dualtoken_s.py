# Mask R-CNN + FPN with DualToken-ViT-S, COCO 2017 instances, 1x schedule, 1333x800.
# The backbone has no stride-4 stage: TransposedConvFPN makes one from the stride-8 map with
# a transposed convolution (as LightViT's detection code does), giving P2-P6.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/reliability.py',
]
# custom_imports and custom_hooks (RandomStateHook, FiniteLossHook): ./_base_/reliability.py
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # kill-safe saves

model = dict(
    backbone=dict(
        _delete_=True,
        type='DualTokenViT',
        arch='small',
        out_indices=(0, 1, 2),
        drop_path_rate=0.1,
        # token budget: at 1333x800 every X_ds would hold 25x42 = 1050 global tokens (1.8x the
        # MACs pixel scaling predicts, docs/complexity.md); pool them to at most 196 (our
        # choice for dense inputs; None keeps the paper's behaviour)
        max_global_tokens=196,
        # init_cfg=dict(type='Pretrained', prefix='backbone.',
        #               checkpoint='work_dirs/dualtoken_s_in1k/epoch_300.pth'),
    ),
    neck=dict(
        _delete_=True,
        type='TransposedConvFPN',
        in_channels=[56, 112, 224],
        out_channels=256,
        num_outs=5))

# mmdet's COCO training pipeline, images loaded by LoadCheckedImageFromFile
# (mmdualtoken.datasets.transforms): a missing, truncated or undecodable image stops the run
# with one line naming the file (mmcv's loader does not say which problem, and with OpenCV 4
# decodes a truncated JPEG silently, grey below the cut). The test pipeline keeps mmcv's
# loader, which the inferencers look up by name.
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

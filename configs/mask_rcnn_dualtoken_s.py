# Mask R-CNN + FPN with DualToken-ViT-S, COCO 2017 instances, 1x schedule, 1333x800.
# The backbone has no stride-4 stage: TransposedConvFPN makes one from the stride-8 map with
# a transposed convolution (as LightViT's detection code does), giving P2-P6.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/reliability.py',
    './_base_/models/dualtoken_s_det_backbone.py',
]
# custom_imports and custom_hooks (RandomStateHook, FiniteLossHook): ./_base_/reliability.py
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # kill-safe saves

model = dict(
    # DualToken-ViT-S, strides 8, 16, 32, with a token budget for 1333x800, fine-tuned from
    # the S ImageNet checkpoint (its settings: ./_base_/models/dualtoken_s_det_backbone.py)
    backbone=dict(_delete_=True, **_base_.dualtoken_s_det_backbone),
    neck=dict(
        _delete_=True,
        type='TransposedConvFPN',
        in_channels=[56, 112, 224],
        out_channels=256,
        num_outs=5,
        # the norm after the transposed conv, trained from scratch: SyncBN, as the backbone's
        # (./_base_/models/dualtoken_s_det_backbone.py says why)
        norm_cfg=dict(type='SyncBN', requires_grad=True)))

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

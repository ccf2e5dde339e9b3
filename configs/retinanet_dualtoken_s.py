# RetinaNet + FPN with DualToken-ViT-S, COCO 2017, 1x schedule (12 epochs), 1333x800.
#   python tools/train.py configs/retinanet_dualtoken_s.py            # data under data/coco
#   tools/dist_train.sh configs/retinanet_dualtoken_s.py 8 --auto-scale-lr
# Total batch 16 (8 processes x 2 images); --auto-scale-lr rescales lr for other totals.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
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
    # P3-P5 from the three stages, P6-P7 by extra convs on the last input
    neck=dict(in_channels=[56, 112, 224], start_level=0, add_extra_convs='on_input', num_outs=5))

# mmdet's COCO training pipeline, images loaded by LoadCheckedImageFromFile
# (mmdualtoken.datasets.transforms): a missing, truncated or undecodable image stops the run
# with one line naming the file (mmcv's loader does not say which problem, and with OpenCV 4
# decodes a truncated JPEG silently, grey below the cut). The test pipeline keeps mmcv's
# loader, which the inferencers look up by name.
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

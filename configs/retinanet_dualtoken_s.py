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
]
# custom_imports and custom_hooks (RandomStateHook, FiniteLossHook): ./_base_/reliability.py
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # kill-safe saves

model = dict(
    backbone=dict(
        _delete_=True,
        type='DualTokenViT',
        arch='small',
        out_indices=(0, 1, 2),  # strides 8, 16, 32
        drop_path_rate=0.1,
        # token budget: at 1333x800 every X_ds would hold 25x42 = 1050 global tokens (1.8x the
        # MACs pixel scaling predicts, docs/complexity.md); pool them to at most 196 (our
        # choice for dense inputs; None keeps the paper's behaviour)
        max_global_tokens=196,
        # Start from an ImageNet classification checkpoint (configs/dualtoken_s_in1k.py):
        # init_cfg=dict(type='Pretrained', prefix='backbone.',
        #               checkpoint='work_dirs/dualtoken_s_in1k/epoch_300.pth'),
    ),
    # P3-P5 from the three stages, P6-P7 by extra convs on the last input
    neck=dict(in_channels=[56, 112, 224], start_level=0, add_extra_convs='on_input',
              num_outs=5))

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

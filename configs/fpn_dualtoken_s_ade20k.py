# Semantic FPN with DualToken-ViT-S on ADE20K: 512x512 crops, 40k iterations, AdamW lr 2e-4,
# weight decay 1e-4, poly schedule, total batch 32 (8 processes x 4 images): the protocol
# PVT, PoolFormer and EfficientFormer report under (PVT's configs: "8 gpu instead of 4 in
# mmsegmentation, so lr*2 and max_iters/2"). Test mode: whole image (short side 512).
#   tools/dist_train.sh configs/fpn_dualtoken_s_ade20k.py 8      # data under data/ade
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    './_base_/datasets/ade20k_checked.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
    './_base_/reliability.py',
]
# custom_imports and custom_hooks (RandomStateHook, FiniteLossHook): ./_base_/reliability.py
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # kill-safe saves

crop_size = (512, 512)
# SyncBN, as OpenMMLab's multi-GPU segmentation configs use (4 images per GPU are too few
# for per-GPU statistics). tools/train.py and tools/test.py turn it into BN where it cannot
# run: a single process, or processes without a GPU (gloo).
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DualTokenViT',
        arch='small',
        out_indices=(0, 1, 2),  # strides 8, 16, 32
        drop_path_rate=0.1,
        conv_norm_cfg=norm_cfg,  # the BNs of the stem and the token downsampling
        # fine-tune from the ImageNet checkpoint of this arch, the last of the 300 epochs that
        # `python tools/train.py configs/dualtoken_s_in1k.py` writes (tools/train.py stops
        # with one line while it is missing); from scratch:
        # --cfg-options model.backbone.init_cfg=None
        init_cfg=dict(
            type='Pretrained',
            prefix='backbone.',
            checkpoint='work_dirs/dualtoken_s_in1k/epoch_300.pth'),
    ),
    neck=dict(in_channels=[56, 112, 224], out_channels=256, num_outs=3),
    decode_head=dict(
        in_channels=[256, 256, 256],
        in_index=[0, 1, 2],
        feature_strides=[8, 16, 32],
        num_classes=150,
        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

# x 8 processes = 32
train_dataloader = dict(batch_size=4)
# the lr below is for a total batch of 32 (8 processes x 4 images); --auto-scale-lr rescales it
auto_scale_lr = dict(enable=False, base_batch_size=32)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]

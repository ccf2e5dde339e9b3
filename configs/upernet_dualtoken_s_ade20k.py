# UperNet with DualToken-ViT-S on ADE20K: 512x512 crops, 160k iterations, total batch 16
# (8 processes x 2 images), AdamW lr 6e-5, weight decay 0.01 (none on norms, biases, 1-D
# parameters and the global tokens), 1500 linear warm-up iterations then poly (power 1): the
# Swin/ConvNeXt UperNet protocol. Test mode: whole image.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    './_base_/datasets/ade20k_checked.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/reliability.py',
]
# custom_imports and custom_hooks (RandomStateHook, FiniteLossHook): ./_base_/reliability.py
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # kill-safe saves

crop_size = (512, 512)
norm_cfg = dict(
    type='SyncBN', requires_grad=True)  # BN where it cannot run: see fpn_dualtoken_s_ade20k.py
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DualTokenViT',
        arch='small',
        out_indices=(0, 1, 2),
        drop_path_rate=0.2,
        conv_norm_cfg=norm_cfg,  # the BNs of the stem and the token downsampling
        # from the S ImageNet checkpoint, as in fpn_dualtoken_s_ade20k.py
        init_cfg=dict(
            type='Pretrained',
            prefix='backbone.',
            checkpoint='work_dirs/dualtoken_s_in1k/epoch_300.pth'),
    ),
    decode_head=dict(
        in_channels=[56, 112, 224], in_index=[0, 1, 2], num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=112,  # the stride-16 stage
        in_index=1,
        num_classes=150,
        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

# x 8 processes = 16
train_dataloader = dict(batch_size=2)
# the lr above is for a total batch of 16 (8 processes x 2 images); --auto-scale-lr rescales it
auto_scale_lr = dict(enable=False, base_batch_size=16)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'backbone.global_tokens': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=1500, end=160000, by_epoch=False)
]

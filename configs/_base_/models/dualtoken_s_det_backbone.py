# DualToken-ViT-S as the backbone of the COCO detectors (configs/retinanet_dualtoken_s.py,
# configs/mask_rcnn_dualtoken_s.py), in place of their mmdet base's ResNet-50:
#     model = dict(backbone=dict(_delete_=True, **_base_.dualtoken_s_det_backbone), ...)
# It is a variable of its own because mmengine lets no two _base_ files set the same key, and
# the detector's mmdet base sets `model`.
dualtoken_s_det_backbone = dict(
    type='DualTokenViT',
    arch='small',
    out_indices=(0, 1, 2),  # strides 8, 16, 32
    drop_path_rate=0.1,
    # SyncBN in the stem and the token downsampling, as in the segmentation configs and
    # mmdet's RetinaNet with EfficientNet (a light BN backbone fine-tuned at a few images per
    # GPU): at 2 images per GPU each rank's own statistics would be noisy and different (DDP
    # broadcasts no buffers, so ranks would validate with their own and only rank 0's would
    # be saved); synchronised, every rank normalises with the 16 images' statistics and holds
    # the same. tools/train.py and tools/test.py make it BN where it cannot run (one process,
    # or CPU processes on gloo).
    conv_norm_cfg=dict(type='SyncBN', requires_grad=True),
    # token budget: at 1333x800 every X_ds would hold 25x42 = 1050 global tokens (1.8x the
    # MACs pixel scaling predicts, docs/complexity.md); pool them to at most 196 (our
    # choice for dense inputs; None keeps the paper's behaviour)
    max_global_tokens=196,
    # fine-tune from the ImageNet checkpoint of this arch, the last of the 300 epochs that
    # `python tools/train.py configs/dualtoken_s_in1k.py` writes (tools/train.py stops with
    # one line while it is missing); from scratch: --cfg-options model.backbone.init_cfg=None
    init_cfg=dict(
        type='Pretrained',
        prefix='backbone.',
        checkpoint='work_dirs/dualtoken_s_in1k/epoch_300.pth'),
)

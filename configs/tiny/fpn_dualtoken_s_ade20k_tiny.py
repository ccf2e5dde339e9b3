# configs/fpn_dualtoken_s_ade20k.py on the generated tiny ADE20K set
# (data/tiny/ade/ADEChallengeData2016, written by tools/data/make_tiny_datasets.py) with a
# few-minute CPU schedule. Only the data (classes: ADE20K's first five, image size) and the
# schedule differ from the real config.
_base_ = ['../fpn_dualtoken_s_ade20k.py', '../_base_/datasets/tiny_ade20k.py']

# the tiny set (../_base_/datasets/tiny_ade20k.py) in place of ADE20K
data_root = _base_.tiny_data_root
crop_size = _base_.tiny_crop_size
train_pipeline = _base_.tiny_train_pipeline
test_pipeline = _base_.tiny_test_pipeline
train_dataloader = _base_.tiny_train_dataloader
val_dataloader = _base_.tiny_val_dataloader
test_dataloader = val_dataloader

auto_scale_lr = dict(base_batch_size=8)  # one process x 8 images

model = dict(
    data_preprocessor=dict(size=crop_size),
    # from scratch (the backbone's default init), not from the ImageNet checkpoint the real
    # config fine-tunes from: the tiny run needs no pretraining
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=5))

max_iters = 160
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=10, end=max_iters, by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
    # pictures of predicted masks over their images, written during validation to
    # <work_dir>/<timestamp>/vis_data/vis_image/
    visualization=dict(draw=True, interval=4))

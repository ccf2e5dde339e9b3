# DualToken-ViT-T on Fashion-MNIST, the recipe of configs/_base_/fashion_mnist_recipe.py
# (grey images: one input channel), on this repository's CPUs:
#   python tools/data/prepare_fashion_mnist.py
#   python tools/train.py configs/fashion_mnist/dualtoken_t_fashion-mnist.py
_base_ = '../_base_/fashion_mnist_recipe.py'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DualTokenViT',
        arch='tiny',
        in_channels=1,
        out_indices=(2, ),
        gap_before_final_norm=True,
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ])

# DualToken-ViT-T on Fashion-MNIST, the recipe of configs/_base_/fashion_mnist_recipe.py
# (grey images: one input channel), on this repository's CPUs:
#   python tools/data/prepare_fashion_mnist.py
#   python tools/train.py configs/fashion_mnist/dualtoken_t_fashion-mnist.py
_base_ = '../_base_/fashion_mnist_recipe.py'

# as configs/dualtoken_t_in1k.py: the backbone pools its last stage before its final norm;
# LightViT's initialisation of Linear and LayerNorm weights
model = dict(
    backbone=dict(
        type='DualTokenViT',
        arch='tiny',
        in_channels=1,
        out_indices=(2, ),
        gap_before_final_norm=True,
        drop_path_rate=0.1),
    head=dict(in_channels=192),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ])

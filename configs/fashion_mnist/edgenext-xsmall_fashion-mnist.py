# EdgeNeXt-xsmall (mmpretrain's; of the EdgeNeXt sizes the closest to DualToken-ViT-T's MACs)
# on Fashion-MNIST with the recipe DualToken-ViT-T gets (configs/_base_/fashion_mnist_recipe.py),
# a peer in docs/fashion_mnist.md:
#   python tools/train.py configs/fashion_mnist/edgenext-xsmall_fashion-mnist.py
_base_ = '../_base_/fashion_mnist_recipe.py'

model = dict(
    backbone=dict(
        type='EdgeNeXt',
        arch='xsmall',
        in_channels=1,
        out_indices=(3, ),
        drop_path_rate=0.1,
        gap_before_final_norm=True),
    head=dict(in_channels=192))

# ResNet-18 (mmpretrain's) on Fashion-MNIST with the recipe DualToken-ViT-T gets
# (configs/_base_/fashion_mnist_recipe.py), a peer in docs/fashion_mnist.md:
#   python tools/train.py configs/fashion_mnist/resnet18_fashion-mnist.py
_base_ = '../_base_/fashion_mnist_recipe.py'

model = dict(
    backbone=dict(type='ResNet', depth=18, in_channels=1, num_stages=4, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(in_channels=512))

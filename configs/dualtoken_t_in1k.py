# DualToken-ViT-T (0.5 G MACs) on ImageNet-1k, LightViT's recipe (configs/_base_/).
_base_ = './_base_/cls_lightvit_recipe.py'

model = dict(backbone=dict(arch='tiny'), head=dict(in_channels=192))

# DualToken-ViT-S (mix): the token MLP is the paper's MixMLP; otherwise dualtoken_s_in1k.py.
_base_ = './_base_/cls_lightvit_recipe.py'

model = dict(backbone=dict(arch='small-mix'), head=dict(in_channels=224))

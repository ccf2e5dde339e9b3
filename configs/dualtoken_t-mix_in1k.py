# DualToken-ViT-T (mix): the token MLP is the paper's MixMLP; otherwise dualtoken_t_in1k.py.
_base_ = './_base_/cls_lightvit_recipe.py'

model = dict(backbone=dict(arch='tiny-mix'), head=dict(in_channels=192))

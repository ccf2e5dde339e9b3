# DualToken-ViT-S (1.0 G MACs) on ImageNet-1k, LightViT's recipe (configs/_base_/).
#   tools/dist_train.sh configs/dualtoken_s_in1k.py 8        # data under data/imagenet
_base_ = './_base_/cls_lightvit_recipe.py'

model = dict(backbone=dict(arch='small'), head=dict(in_channels=224))

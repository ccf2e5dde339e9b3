# Paper Table 6, the "normal" global tokens row: 8 LightViT-style tokens fused with X_ga by
# multi-head self-attention (the paper's Figure 3(c)) instead of position-aware tokens.
#   tools/dist_train.sh configs/ablations/dualtoken_s_normal-tokens_in1k.py 8
_base_ = '../dualtoken_s_in1k.py'

model = dict(backbone=dict(global_tokens='normal'))

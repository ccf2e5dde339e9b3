# Paper Table 6, our extra row: no global-token branch at all (each block is the Conv
# Encoder, then the FFN with BiDim attention).
#   tools/dist_train.sh configs/ablations/dualtoken_s_no-tokens_in1k.py 8
_base_ = '../dualtoken_s_in1k.py'

model = dict(backbone=dict(global_tokens='none'))

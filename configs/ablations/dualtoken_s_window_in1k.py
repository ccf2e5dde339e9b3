# Paper Table 8, the window self-attention row: 7x7-window self-attention as the local
# branch instead of the Conv Encoder.
#   tools/dist_train.sh configs/ablations/dualtoken_s_window_in1k.py 8
_base_ = '../dualtoken_s_in1k.py'

model = dict(backbone=dict(local_branch='window'))

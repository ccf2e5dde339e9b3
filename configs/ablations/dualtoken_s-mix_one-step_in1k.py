# Paper Table 9, the one-step row (on S (mix), as the paper): X_local goes to the token
# grid in one conv with kernel = stride = 2**M instead of M stride-2 steps.
#   tools/dist_train.sh configs/ablations/dualtoken_s-mix_one-step_in1k.py 8
_base_ = '../dualtoken_s-mix_in1k.py'

model = dict(backbone=dict(downsample='one_step'))

# Paper Table 7, 9x9 position-aware global tokens (X_ga is interpolated to them in every
# block) instead of 7x7.
#   tools/dist_train.sh configs/ablations/dualtoken_s_grid9_in1k.py 8
_base_ = '../dualtoken_s_in1k.py'

model = dict(backbone=dict(grid_size=9))

# Paper Tables 5-8, the S row: normal MLP, position-aware 7x7 global tokens, Conv Encoder,
# step-wise downsampling (configs/dualtoken_s_in1k.py unchanged, under its ablation name).
#   tools/dist_train.sh configs/ablations/dualtoken_s_baseline_in1k.py 8
_base_ = '../dualtoken_s_in1k.py'

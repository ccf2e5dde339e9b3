# Paper Table 5, the MixMLP row, and Table 9, the step-wise row (on S (mix), as the paper):
# configs/dualtoken_s-mix_in1k.py unchanged, under its ablation name.
#   tools/dist_train.sh configs/ablations/dualtoken_s-mix_baseline_in1k.py 8
_base_ = '../dualtoken_s-mix_in1k.py'

# mmdet's 1x schedule (12 epochs, linear warm-up over 500 iterations, lr x0.1 at epochs 8
# and 11, auto_scale_lr base batch 16) with AdamW as efficient-ViT detection papers use it:
# lr 1e-4, weight decay 0.05 (LightViT's detection setting), none on norms, biases, 1-D
# parameters (the fusion weights weight_aggregated / weight_tokens) and the global tokens, as
# in the ImageNet recipe.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'backbone.global_tokens': dict(decay_mult=0.)}))

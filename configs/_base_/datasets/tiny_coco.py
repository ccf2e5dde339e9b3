# The generated tiny COCO set (data/tiny/coco, written by tools/data/make_tiny_datasets.py):
# COCO 2017's layout, three classes of shapes with boxes and polygon masks, loaded in the main
# process. Shared by configs/tiny/retinanet_dualtoken_s_tiny.py and
# mask_rcnn_dualtoken_s_tiny.py, which list it after their real config, put its tiny_*
# settings in place of COCO's and give the loaders their own pipelines:
#     train_dataloader = _base_.tiny_train_dataloader
#     train_dataloader.dataset.pipeline = train_pipeline
# (mmengine lets no two _base_ files set the same key, and the real config sets those).
tiny_data_root = 'data/tiny/coco/'
metainfo = dict(
    classes=('square', 'circle', 'triangle'), palette=[(220, 20, 60), (0, 160, 60), (30, 60, 230)])
tiny_train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=tiny_data_root, metainfo=metainfo))
tiny_val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=tiny_data_root, metainfo=metainfo))
tiny_val_evaluator = dict(ann_file=tiny_data_root + 'annotations/instances_val2017.json')

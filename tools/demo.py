#!/usr/bin/env python
"""The README's main job: RetinaNet with DualToken-ViT-S, trained and evaluated on CPU.

    python tools/demo.py [--work-dir work_dirs/demo] [--data-root data/tiny]
        [--cfg-options key=value ...]   (e.g. train_cfg.max_epochs=1 for a quicker look)

1. writes the tiny COCO-format detection set (generated shapes) unless it is there;
2. trains configs/tiny/retinanet_dualtoken_s_tiny.py (the real
   configs/retinanet_dualtoken_s.py with only data and schedule swapped) through
   tools/train.py for a few minutes, evaluating COCO mAP at the end and saving a checkpoint;
3. draws the detections of the trained model on a validation image (DetLocalVisualizer) and
   prints where the picture is, with the mAP, the wall time and the loss at start and end.
"""
import argparse
import json
import os
import os.path as osp
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO_ROOT, 'configs', 'tiny', 'retinanet_dualtoken_s_tiny.py')


def read_scalars(work_dir: str) -> list:
    runs = sorted(
        d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d))
        and osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip()]


def draw_detections(config: str,
                    checkpoint: str,
                    image_path: str,
                    out_file: str,
                    score_thr: float = 0.5) -> int:
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    model = init_detector(config, checkpoint, device='cpu')
    result = inference_detector(model, image_path)
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='demo_visualizer'))
    visualizer.dataset_meta = model.dataset_meta
    image = mmcv.imconvert(mmcv.imread(image_path), 'bgr', 'rgb')
    visualizer.add_datasample(
        'detections',
        image,
        data_sample=result,
        draw_gt=False,
        pred_score_thr=score_thr,
        out_file=out_file)
    return int((result.pred_instances.scores >= score_thr).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/tiny')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], help='more overrides of the tiny config, key=value')
    args = parser.parse_args(argv)
    start = time.time()

    coco = osp.join(args.data_root, 'coco')
    if not osp.isfile(osp.join(coco, 'annotations', 'instances_val2017.json')):
        from mmdualtoken.datasets import make_tiny_datasets
        print(f'[demo] writing the tiny COCO set to {coco}')
        make_tiny_datasets(args.data_root, tasks=['coco'], show_progress=True)

    print(f'[demo] training {osp.relpath(CONFIG)} (progress below, about 1 line per 6 '
          'iterations)')
    from mmdualtoken.launch import train_main
    train_main([
        CONFIG, '--work-dir', args.work_dir, '--cfg-options',
        f'train_dataloader.dataset.data_root={coco}/', f'val_dataloader.dataset.data_root={coco}/',
        f'val_evaluator.ann_file={coco}/annotations/instances_val2017.json', *args.cfg_options
    ])
    logged = read_scalars(args.work_dir)
    losses = [r['loss'] for r in logged if 'loss' in r]
    metrics = [r for r in logged if 'coco/bbox_mAP' in r][-1]
    checkpoint = osp.join(args.work_dir,
                          sorted(f for f in os.listdir(args.work_dir) if f.endswith('.pth'))[-1])

    with open(osp.join(coco, 'annotations', 'instances_val2017.json')) as f:
        first_val = json.load(f)['images'][0]['file_name']
    picture = osp.join(args.work_dir, 'detections.png')
    kept = draw_detections(CONFIG, checkpoint, osp.join(coco, 'val2017', first_val), picture)
    elapsed = time.time() - start

    print('\n[demo] RetinaNet + DualToken-ViT-S on the tiny COCO set (CPU)')
    print(f'  loss (first logged -> last): {losses[0]:.3f} -> {losses[-1]:.3f}')
    print(f'  COCO bbox mAP: {metrics["coco/bbox_mAP"]:.3f}   mAP@50: '
          f'{metrics["coco/bbox_mAP_50"]:.3f}')
    print(f'  checkpoint: {checkpoint}')
    print(f'  picture: {picture} ({kept} detections above score 0.5 on {first_val})')
    print(f'  wall time: {elapsed / 60:.1f} min')
    return dict(losses=losses, metrics=metrics, picture=picture, seconds=elapsed)


if __name__ == '__main__':
    from mmdualtoken.launch import run_tool
    run_tool(main)

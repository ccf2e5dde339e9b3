"""Whole detectors through mmdeploy 1.3.1 with its stock settings (docs/deployment.md).

* configs/deploy/detection_onnxruntime_dynamic.py is mmdeploy's stock deploy config (its wheel
  has no configs/), value for value;
* mmdualtoken.deploy.mmdeploy_rewriters, registered when mmdeploy loads one of our configs:
  inside mmdeploy's export, and only there, torch.onnx.export defaults to the TorchScript
  exporter, on a torch whose default is dynamo=True and on one without that argument;
* the docs' Python form on a tiny RetinaNet + DualToken-ViT-S trained here: the whole detector
  exports at the stock opset 11 with dynamic axes, and mmdeploy's ONNX Runtime model detects
  what PyTorch does on the same image.

mmdeploy and aenum come with the set-up (tools/setup_env.sh): without them the two tests that
run mmdeploy fail; none is skipped.
"""
import json
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO_ROOT, code_blocks, config, expected_output, page_text, run_tool, tool_env

DEPLOY_CONFIG = 'configs/deploy/detection_onnxruntime_dynamic.py'
# mmdeploy 1.3.1's configs/mmdet/detection/detection_onnxruntime_dynamic.py as mmengine's
# Config.fromfile reads it in a clone of its repository (its _base_ files merged)
STOCK = dict(
    onnx_config=dict(
        type='onnx',
        export_params=True,
        keep_initializers_as_inputs=False,
        opset_version=11,
        save_file='end2end.onnx',
        input_names=['input'],
        output_names=['dets', 'labels'],
        input_shape=None,
        optimize=True,
        dynamic_axes=dict(
            input={
                0: 'batch',
                2: 'height',
                3: 'width'
            },
            dets={
                0: 'batch',
                1: 'num_dets'
            },
            labels={
                0: 'batch',
                1: 'num_dets'
            })),
    codebase_config=dict(
        type='mmdet',
        task='ObjectDetection',
        model_type='end2end',
        post_processing=dict(
            score_threshold=0.05,
            confidence_threshold=0.005,
            iou_threshold=0.5,
            max_output_boxes_per_class=200,
            pre_top_k=5000,
            keep_top_k=100,
            background_label_id=-1)),
    backend_config=dict(type='onnxruntime'))
# 12 iterations (24 images, batch 4, 2 epochs) at 96x72 instead of the tiny config's 256x192,
# within its warm-up, no validation: a few that give scores above the post-processing
# threshold of 0.05 (here 100 detections; 7 iterations gave none, and so did 14: the first
# iterations swing)
TRAIN = [
    'train_dataloader.dataset.indices=24', 'train_dataloader.batch_size=4',
    'train_dataloader.dataset.pipeline.2.scale=(96,72)', 'train_cfg.max_epochs=2',
    'train_cfg.val_begin=3', 'default_hooks.checkpoint.interval=2'
]


def test_the_deploy_config_is_mmdeploys_stock_one():
    """Opset 11, the dynamic axes, the post-processing numbers: all as mmdeploy ships them."""
    from mmengine.config import Config
    assert Config.fromfile(osp.join(REPO_ROOT, DEPLOY_CONFIG)).to_dict() == STOCK


REWRITER_CHECK = textwrap.dedent('''
    import json, sys
    import torch
    from mmengine.config import Config
    from mmdeploy.core import RewriterContext
    seen = []

    def export_29(model, args, f=None, *, dynamo=True, **kwargs):  # torch >= 2.9's default
        seen.append(dynamo)

    def export_21(model, args, f, export_params=True, opset_version=None):  # no dynamo
        seen.append('no dynamo argument')

    Config.fromfile(sys.argv[1])  # its custom_imports import mmdualtoken, as in mmdeploy
    for fake in (export_29, export_21):
        torch.onnx.export = fake
        with RewriterContext(cfg={}, backend='onnxruntime'):
            torch.onnx.export(None, (), 'graph.onnx')
        torch.onnx.export(None, (), 'graph.onnx')
        seen.append(torch.onnx.export is fake)
    print(json.dumps(seen))
''')


@pytest.mark.slow
def test_inside_mmdeploys_export_torch_onnx_export_defaults_to_torchscript(tmp_path):
    """A process that imports mmdeploy, then loads one of our configs (what mmdeploy's tools
    and API do): inside mmdeploy's RewriterContext torch.onnx.export gets dynamo=False where
    it has that argument and nothing where it has not; outside, torch's own default stands."""
    proc = subprocess.run(
        [sys.executable, '-c', REWRITER_CHECK,
         config('tiny/retinanet_dualtoken_s_tiny.py')],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=tool_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == [False, True, True, 'no dynamo argument', 'no dynamo argument', True]


def docs_script() -> str:
    """The Python form of docs/deployment.md: its ```python block that imports mmdeploy."""
    (body, ) = [
        body for lang, body in code_blocks(page_text('docs/deployment.md'))
        if lang == 'python' and 'from mmdeploy' in body
    ]
    return body


def run_docs_script(replace: dict, cwd) -> subprocess.CompletedProcess:
    """The docs' script with each of its paths in ``replace`` replaced, run from ``cwd``."""
    body = docs_script()
    for old, new in replace.items():
        assert body.count(repr(old)) == 1, f'docs/deployment.md: {old!r} not in the script'
        body = body.replace(repr(old), repr(new))
    script = cwd / 'mmdeploy_route.py'
    script.write_text(body)
    return subprocess.run([sys.executable, str(script)],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          env=tool_env())


@pytest.mark.slow
def test_retinanet_through_mmdeploy_detects_what_pytorch_does(tiny_workdir, tmp_path):
    """tools/train.py writes a tiny RetinaNet + DualToken-ViT-S checkpoint; the docs' script
    exports it with the stock deploy config and prints that ONNX Runtime (mmdeploy's backend
    model) and PyTorch give the same detections, more than none, on a tiny COCO image. The
    only changes to the script: the tiny config, its checkpoint and image for the real ones."""
    import onnx
    work_dir = tmp_path / 'retinanet'
    run_tool(
        'train.py',
        config('tiny/retinanet_dualtoken_s_tiny.py'),
        '--work-dir',
        str(work_dir),
        '--cfg-options',
        *TRAIN,
        cwd=str(tiny_workdir))
    image = str(tiny_workdir / 'data' / 'tiny' / 'coco' / 'val2017' / '000001.jpg')
    replace = {
        DEPLOY_CONFIG: osp.join(REPO_ROOT, DEPLOY_CONFIG),
        'configs/retinanet_dualtoken_s.py': config('tiny/retinanet_dualtoken_s_tiny.py'),
        'work_dirs/retinanet_dualtoken_s/epoch_12.pth': str(work_dir / 'epoch_2.pth'),
        'data/coco/val2017/000000000139.jpg': image,
    }
    proc = run_docs_script(replace, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    expected = expected_output(docs_script())  # its printed lines end the output (the log's first)
    assert proc.stdout.splitlines()[-len(expected):] == expected, proc.stdout[-3000:]
    graph = onnx.load(str(tmp_path / 'work_dirs' / 'mmdeploy_retinanet_s' / 'end2end.onnx'))
    assert [o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')] == [11]
    image = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in image] == ['batch', 3, 'height', 'width']

# mmdeploy's stock deploy config for a detector in ONNX Runtime, expanded: the values of
# configs/mmdet/detection/detection_onnxruntime_dynamic.py in mmdeploy 1.3.1 (a clone of
# its repository) merged with its _base_ files (configs/mmdet/_base_/base_dynamic.py,
# base_static.py, configs/_base_/onnx_config.py and configs/_base_/backends/onnxruntime.py)
# into one file, unchanged. mmdeploy's wheel has no configs/ folder; the suite exports with
# this file (tests/test_deploy/test_mmdeploy.py, which also checks that the values are the
# stock ones). With a clone, pass the stock file itself.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['dets', 'labels'],
    input_shape=None,
    optimize=True,
    dynamic_axes={
        'input': {
            0: 'batch',
            2: 'height',
            3: 'width'
        },
        'dets': {
            0: 'batch',
            1: 'num_dets',
        },
        'labels': {
            0: 'batch',
            1: 'num_dets',
        },
    })
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,  # for YOLOv3
        iou_threshold=0.5,
        max_output_boxes_per_class=200,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1,
    ))
backend_config = dict(type='onnxruntime')

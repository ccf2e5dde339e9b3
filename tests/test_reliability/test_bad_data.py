"""Bad data: one clear error naming the file and the problem, or a logged skip.

Each test writes the tiny datasets of one framework into its own folder, damages exactly one
file and runs tools/train.py on that framework's tiny config, as a user would. What the
annotation files show (files listed but missing, malformed entries, class ids out of range,
images without annotations) is found before the Runner is built
(mmdualtoken/datasets/checks.py); what needs decoding (a truncated image, a segmentation map
that does not fit its image) when the sample is loaded
(mmdualtoken/datasets/transforms.py), also in a DataLoader worker.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, config
from PIL import Image

pytestmark = pytest.mark.slow  # fault injections in Runner trainings

COCO = 'data/tiny/coco'
ADE = 'data/tiny/ade/ADEChallengeData2016'
IMAGENET = 'data/tiny/imagenet'
# a few iterations; validation never runs (its interval is past the end)
SHORT = {
    'tiny/retinanet_dualtoken_s_tiny.py': ['train_cfg.max_epochs=1', 'train_cfg.val_interval=2'],
    'tiny/fpn_dualtoken_s_ade20k_tiny.py': ['train_cfg.max_iters=2', 'train_cfg.val_interval=4'],
    'tiny/dualtoken_s_in1k_tiny.py': ['train_cfg.max_epochs=1', 'train_cfg.val_interval=2'],
}
BEFORE_TRAINING = 'nothing (found before the first iteration)'
WHEN_LOADED = 'the training since the last checkpoint (found when the sample is loaded)'


def tiny_data(tmp_path, task: str) -> str:
    """A working folder holding data/tiny/<task> only (10 COCO, 6 ADE20K, 12 ImageNet train
    images), for this test alone to damage."""
    from mmdualtoken.datasets import make_tiny_datasets
    work = tmp_path / 'work'
    make_tiny_datasets(str(work / 'data' / 'tiny'), tasks=[task], scale=0.1)
    return str(work)


def train(work: str, name: str, *options: str) -> subprocess.CompletedProcess:
    """tools/train.py on ``configs/<name>`` with a short schedule, from ``work``; the
    outcome is returned, not checked."""
    cmd = [
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        config(name), '--work-dir',
        osp.join(work, 'work_dir'), '--cfg-options', 'randomness.seed=0',
        'default_hooks.logger.interval=1', *SHORT[name], *options
    ]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600, env=env)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line the user is told: ``error: ...`` ends stderr, exit code 1, and no
    traceback anywhere (a worker's error included)."""
    output = f'{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
    assert proc.returncode == 1, output
    assert 'Traceback' not in proc.stderr, output
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('error: ') and '\n' not in line, output
    return line


def trained_iterations(proc: subprocess.CompletedProcess) -> int:
    return len(re.findall(r'(?:Epoch|Iter)\(train\)', proc.stdout))


def edit_json(path: str, edit) -> None:
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, 'w') as f:
        json.dump(data, f)


def edit_lines(path: str, number: int, line: str) -> None:
    with open(path) as f:
        lines = f.read().splitlines()
    lines[number - 1] = line
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def first_annotation_of(data: dict, image_id: int) -> dict:
    return next(a for a in data['annotations'] if a['image_id'] == image_id)


def assert_stopped_before_training(proc, *expected: str) -> str:
    line = error_line(proc)
    for text in expected:
        assert text in line, line
    assert trained_iterations(proc) == 0, proc.stdout[-3000:]
    return line


# ---------------------------------------------------------------- detection (COCO json)


def test_detection_listed_image_missing(tmp_path, fault_report):
    work = tiny_data(tmp_path, 'coco')
    os.remove(osp.join(work, COCO, 'train2017', '000003.jpg'))
    proc = train(work, 'tiny/retinanet_dualtoken_s_tiny.py')
    line = assert_stopped_before_training(
        proc, f'{COCO}/annotations/instances_train2017.json',
        f'images it lists that do not exist (1): {COCO}/train2017/000003.jpg')
    fault_report(
        'data',
        fault='detection: an image the annotation file lists is missing',
        happened=f'stopped before training: {line}',
        lost=BEFORE_TRAINING)


MALFORMED = {
    'a bbox of 3 numbers': (lambda ann: ann.update(bbox=ann['bbox'][:3]), 'is not 4 numbers'),
    'no bbox': (lambda ann: ann.pop('bbox'), "has no 'bbox'"),
    'a non-numeric bbox': (lambda ann: ann['bbox'].__setitem__(2, 'wide'), 'is not 4 numbers'),
}


@pytest.mark.parametrize('damage', list(MALFORMED))
def test_detection_malformed_annotation(tmp_path, fault_report, damage):
    work = tiny_data(tmp_path, 'coco')
    edit, problem = MALFORMED[damage]
    edit_json(
        osp.join(work, COCO, 'annotations', 'instances_train2017.json'),
        lambda data: edit(first_annotation_of(data, 3)))
    proc = train(work, 'tiny/retinanet_dualtoken_s_tiny.py')
    line = assert_stopped_before_training(proc, 'malformed annotations (1): annotation id',
                                          '(000003.jpg)', problem)
    fault_report(
        'data',
        fault=f'detection: an annotation with {damage}',
        happened=f'stopped before training: {line}',
        lost=BEFORE_TRAINING)


def test_detection_category_id_out_of_range(tmp_path, fault_report):
    work = tiny_data(tmp_path, 'coco')
    edit_json(
        osp.join(work, COCO, 'annotations', 'instances_train2017.json'),
        lambda data: first_annotation_of(data, 3).update(category_id=7))
    proc = train(work, 'tiny/retinanet_dualtoken_s_tiny.py')
    line = assert_stopped_before_training(
        proc, 'annotations with a category_id not in its categories [1, 2, 3] (1):',
        '(000003.jpg): category_id 7')
    fault_report(
        'data',
        fault='detection: an annotation whose category_id is not a category',
        happened=f'stopped before training: {line}',
        lost=BEFORE_TRAINING)


def test_detection_image_without_annotations_is_skipped_and_logged(tmp_path, fault_report):
    """mmdet's convention (filter_empty_gt=True) skips it; the skip is logged with a count."""
    work = tiny_data(tmp_path, 'coco')
    edit_json(
        osp.join(work, COCO, 'annotations', 'instances_train2017.json'),
        lambda data: data.update(annotations=[a for a in data['annotations']
                                              if a['image_id'] != 3]))
    proc = train(work, 'tiny/retinanet_dualtoken_s_tiny.py', 'train_dataloader.batch_size=3')
    assert proc.returncode == 0, proc.stderr[-6000:]
    logged = re.search(r'train_dataloader\.dataset: skipping .*', proc.stdout)
    assert logged, proc.stdout[-3000:]
    message = logged.group(0)
    assert message == (f'train_dataloader.dataset: skipping 1 of 10 images of '
                       f'{COCO}/annotations/instances_train2017.json that have no annotations '
                       "of the classes (filter_empty_gt=True, mmdet's convention): 000003.jpg")
    # 9 images in batches of 3: the epoch has 3 iterations (10 would make 4)
    assert 'Epoch(train) [1][3/3]' in proc.stdout, proc.stdout[-3000:]
    fault_report(
        'data',
        fault='detection: an image without annotations',
        happened=f'skipped (mmdet\'s filter_empty_gt) and logged: "{message}"; '
        'training ran on the other images',
        lost='that image')


@pytest.mark.parametrize('workers', [0, 2])
def test_detection_truncated_image(tmp_path, fault_report, workers):
    work = tiny_data(tmp_path, 'coco')
    path = osp.join(work, COCO, 'train2017', '000003.jpg')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    proc = train(work, 'tiny/retinanet_dualtoken_s_tiny.py',
                 f'train_dataloader.num_workers={workers}')
    line = error_line(proc)
    assert line == (f'error: Bad image {COCO}/train2017/000003.jpg: the file is truncated: '
                    'its JPEG data stops before the end-of-image marker')
    assert not [f for f in os.listdir(osp.join(work, 'work_dir')) if f.endswith('.pth')]
    where = 'in the main process' if workers == 0 else f'in one of {workers} DataLoader workers'
    fault_report(
        'data',
        fault=f'detection: a truncated JPEG, loaded {where}',
        happened=f'stopped when the image was loaded: {line}',
        lost=WHEN_LOADED)


# ------------------------------------------------------------ segmentation (ADE20K layout)

LABEL = f'{ADE}/annotations/training/tiny_train_000002.png'
IMAGE = f'{ADE}/images/training/tiny_train_000002.jpg'


def test_segmentation_label_map_missing(tmp_path, fault_report):
    work = tiny_data(tmp_path, 'ade')
    os.remove(osp.join(work, LABEL))
    proc = train(work, 'tiny/fpn_dualtoken_s_ade20k_tiny.py')
    line = assert_stopped_before_training(proc, f'{ADE}/images/training',
                                          f'images without their segmentation map (1): {LABEL}')
    fault_report(
        'data',
        fault='segmentation: an image whose label map is missing',
        happened=f'stopped before training: {line}',
        lost=BEFORE_TRAINING)


def test_segmentation_label_map_of_another_size(tmp_path, fault_report):
    work = tiny_data(tmp_path, 'ade')
    label = Image.open(osp.join(work, LABEL))
    label.resize((label.width // 2, label.height // 2), Image.NEAREST).save(osp.join(work, LABEL))
    proc = train(work, 'tiny/fpn_dualtoken_s_ade20k_tiny.py')
    line = error_line(proc)
    assert line == (f'error: Bad segmentation map {LABEL}: it is 64x80 (height x width) but '
                    f'its image {IMAGE} is 128x160')
    fault_report(
        'data',
        fault='segmentation: a label map of another size than its image',
        happened=f'stopped when the sample was loaded: {line}',
        lost=WHEN_LOADED)


def test_segmentation_label_value_out_of_range(tmp_path, fault_report):
    work = tiny_data(tmp_path, 'ade')
    label = np.array(Image.open(osp.join(work, LABEL)))
    label[10, 10] = 200  # neither one of the 5 classes (1..5) nor "other" (0) or ignore (255)
    Image.fromarray(label).save(osp.join(work, LABEL))
    proc = train(work, 'tiny/fpn_dualtoken_s_ade20k_tiny.py')
    line = error_line(proc)
    assert line == (f'error: Bad segmentation map {LABEL}: value(s) [200] out of range: with '
                    'reduce_zero_label they become [199], neither a class index (0..4) nor '
                    'the ignore index 255')
    fault_report(
        'data',
        fault='segmentation: a label value out of range',
        happened=f'stopped when the sample was loaded: {line}',
        lost=WHEN_LOADED)


def test_segmentation_truncated_label_map(tmp_path, fault_report):
    work = tiny_data(tmp_path, 'ade')
    path = osp.join(work, LABEL)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    proc = train(work, 'tiny/fpn_dualtoken_s_ade20k_tiny.py')
    line = error_line(proc)
    assert line == (f'error: Bad segmentation map {LABEL}: the file is truncated: its PNG data '
                    'stops before the IEND chunk')
    assert not [f for f in os.listdir(osp.join(work, 'work_dir')) if f.endswith('.pth')]
    fault_report(
        'data',
        fault='segmentation: a truncated label map (PNG)',
        happened=f'stopped when the sample was loaded: {line}',
        lost=WHEN_LOADED)


def test_undecodable_label_map_is_named(tmp_path):
    """A label map that is no image at all (complete, so the truncation check passes it on):
    mmseg's loader fails inside PIL, and the error names the file."""
    import mmseg.datasets  # noqa: F401  (registers mmseg's LoadAnnotations)

    from mmdualtoken.datasets.transforms import LoadCheckedSegMap
    from mmdualtoken.errors import BadDataError
    path = tmp_path / 'label.png'
    path.write_bytes(b'not an image at all' * 4)
    load = LoadCheckedSegMap(reduce_zero_label=True)
    results = dict(seg_map_path=str(path), seg_fields=[], reduce_zero_label=True)
    with pytest.raises(
            BadDataError,
            match=rf'^Bad segmentation map {re.escape(str(path))}: it '
            r'cannot be decoded \(cannot identify image file'):
        load(results)
    with pytest.raises(BadDataError, match=r'the file does not exist$'):
        load(dict(results, seg_map_path=str(tmp_path / 'missing.png')))
    # a good map loads as mmseg's own transform loads it
    Image.fromarray(np.full((4, 6), 3, np.uint8)).save(path)
    assert (load(dict(results))['gt_seg_map'] == 2).all()  # reduce_zero_label: 3 -> 2


# ------------------------------------------------- classification (ImageNet layout, meta/)

META = f'{IMAGENET}/meta/train.txt'


@pytest.mark.parametrize('damage,line3,expected', [
    ('a line without a label', 'blue_stripes/train_000002.JPEG',
     "malformed lines (expected '<path> <integer label>') (1): line 3 "
     "'blue_stripes/train_000002.JPEG'"),
    ('a non-integer label', 'blue_stripes/train_000002.JPEG two',
     "malformed lines (expected '<path> <integer label>') (1): line 3 "
     "'blue_stripes/train_000002.JPEG two'"),
    ('a label out of range', 'blue_stripes/train_000002.JPEG 7',
     "labels out of range for 4 classes (0..3) (1): line 3 'blue_stripes/train_000002.JPEG 7'"),
])
def test_classification_bad_annotation_line(tmp_path, fault_report, damage, line3, expected):
    work = tiny_data(tmp_path, 'imagenet')
    edit_lines(osp.join(work, META), 3, line3)
    proc = train(work, 'tiny/dualtoken_s_in1k_tiny.py')
    line = assert_stopped_before_training(proc, META, expected)
    fault_report(
        'data',
        fault=f'classification: {damage} in meta/train.txt',
        happened=f'stopped before training: {line}',
        lost=BEFORE_TRAINING)


def test_classification_listed_image_missing(tmp_path, fault_report):
    work = tiny_data(tmp_path, 'imagenet')
    os.remove(osp.join(work, IMAGENET, 'train', 'blue_stripes', 'train_000002.JPEG'))
    proc = train(work, 'tiny/dualtoken_s_in1k_tiny.py')
    line = assert_stopped_before_training(
        proc, META,
        f'images it lists that do not exist (1): {IMAGENET}/train/blue_stripes/train_000002.JPEG')
    fault_report(
        'data',
        fault='classification: an image meta/train.txt lists is missing',
        happened=f'stopped before training: {line}',
        lost=BEFORE_TRAINING)


def test_truncation_check_reads_the_end_only_and_lets_pil_decide():
    """A complete file passes on its last bytes; a cut one is found whatever OpenCV does; a
    complete JPEG with bytes appended after its end (as some cameras write) is not taken
    for a cut one."""
    import io

    from mmdualtoken.datasets.transforms import truncation
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for kind, ending in (('JPEG', 'end-of-image marker'), ('PNG', 'IEND chunk')):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, kind)
        data = buffer.getvalue()
        assert truncation(data) is None
        assert truncation(data + b'\x00' * 16) is None  # zero padding
        assert ending in truncation(data[:len(data) // 2])
    assert truncation(b'GIF89a' + bytes(10)) is None  # other formats: left to the decoder
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, 'JPEG')
    assert truncation(buffer.getvalue() + b'APPENDED TRAILER ' * 8) is None


def test_classification_image_missing_under_torchrun_stops_every_rank(tmp_path):
    """tools/dist_train.sh, 2 processes on one machine: the data is checked once (by local
    rank 0; tests/test_reliability/test_checks_once_per_node.py shows every rank gets the
    outcome), and the job stops before training with the line. torchrun ends the other rank
    as soon as one exits, so the test asks for the line at least once."""
    from helpers import free_port, run_process_tree
    work = tiny_data(tmp_path, 'imagenet')
    os.remove(osp.join(work, IMAGENET, 'train', 'blue_stripes', 'train_000002.JPEG'))
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        PYTHONWARNINGS='ignore',
        PYTHON=sys.executable,
        PORT=str(free_port()))
    cmd = [
        osp.join(REPO_ROOT, 'tools', 'dist_train.sh'),
        config('tiny/dualtoken_s_in1k_tiny.py'), '2', '--work-dir',
        osp.join(work, 'work_dir'), '--cfg-options', *SHORT['tiny/dualtoken_s_in1k_tiny.py']
    ]
    proc = run_process_tree(cmd, cwd=work, env=env, timeout=300)
    output = proc.stdout + proc.stderr
    expected = (f'error: Bad data in train_dataloader.dataset ({META}): images it lists that '
                f'do not exist (1): {IMAGENET}/train/blue_stripes/train_000002.JPEG')
    assert proc.returncode != 0 and expected in output, output[-3000:]
    assert trained_iterations(proc) == 0 and 'Traceback' not in proc.stdout
    # the process group is destroyed before the exit: no abort in gloo's teardown
    assert 'terminate called' not in output and 'exitcode  : 1 ' in output, output[-3000:]

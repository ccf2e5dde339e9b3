"""Checks of the training data that run before anything is built.

A run must not die at hour nine on something a look at the annotation files finds at start.
:func:`check_datasets` reads each split's annotation file the way the framework will (COCO
json for mmdet, the file list of mmseg, mmpretrain's ``<path> <label>`` lines) and raises one
:class:`~mmdualtoken.errors.BadDataError` per dataset that lists every problem found (how
many, and the first few): images it lists that do not exist, malformed entries, class ids out
of range. Images that the framework's own convention skips (mmdet's ``filter_empty_gt``) are
logged with a count. What needs decoding (a truncated image, a segmentation map of another
size) is checked when the sample is loaded, by the transforms of
:mod:`mmdualtoken.datasets.transforms`. In a distributed run the checks run once per machine
(:func:`once_per_node`), and image files are looked for by listing each folder once.
"""
import datetime
import importlib
import json
import math
import os
import os.path as osp
import socket
from numbers import Real
from typing import Dict, Iterator, List, Optional, Tuple

import torch.distributed as dist
from mmengine.config import Config
from mmengine.fileio import list_from_file
from mmengine.logging import print_log

from ..errors import BadDataError, LaunchError

EXAMPLES = 3  # how many offending entries a message names


class Findings:
    """The problems found in one dataset, grouped by kind, told as one line.

    Args:
        where (str): The config entry of the dataset, e.g. ``train_dataloader.dataset``.
        source (str): The annotation file or folder the problems are in.
    """

    def __init__(self, where: str, source: str):
        self.where = where
        self.source = source
        self.kinds: Dict[str, List[str]] = {}

    def add(self, kind: str, item: str) -> None:
        """Record ``item`` (an entry, a path) under ``kind`` (what is wrong with it)."""
        self.kinds.setdefault(kind, []).append(item)

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def message(self) -> str:
        parts = []
        for kind, items in self.kinds.items():
            shown = ', '.join(items[:EXAMPLES])
            more = f' and {len(items) - EXAMPLES} more' if len(items) > EXAMPLES else ''
            parts.append(f'{kind} ({len(items)}): {shown}{more}')
        return (f'Bad data in {self.where} ({self.source}): ' + '; '.join(parts) +
                '. Fix or remove these entries.')

    def raise_if_any(self) -> None:
        if self:
            raise BadDataError(self.message())


def _leaf_datasets(node, where: str) -> Iterator[Tuple[str, dict]]:
    """The dataset configs under wrappers (RepeatDataset's ``dataset``, ConcatDataset's
    ``datasets``), each with its config path."""
    if not node:
        return
    if 'dataset' in node:
        yield from _leaf_datasets(node['dataset'], f'{where}.dataset')
    elif 'datasets' in node:
        for i, child in enumerate(node['datasets']):
            yield from _leaf_datasets(child, f'{where}.datasets[{i}]')
    else:
        yield where, node


def _is_local(dataset) -> bool:
    """Whether the dataset's files are on this machine (remote backends are not looked at)."""
    backend_args = getattr(dataset, 'backend_args', None) or {}
    roots = [str(getattr(dataset, 'data_root', None) or ''), str(dataset.ann_file or '')]
    return backend_args.get('backend', 'local') == 'local' and not any('://' in r for r in roots)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _coco_image_problem(image) -> Optional[str]:
    if not isinstance(image, dict):
        return f'is {type(image).__name__}, not an object'
    for key in ('id', 'file_name', 'width', 'height'):
        if key not in image:
            return f'has no {key!r}'
    if not isinstance(image['id'], int):
        return f"id {image['id']!r} is not an integer"
    if not isinstance(image['file_name'], str):
        return f"file_name {image['file_name']!r} is not a string"
    if not (_is_number(image['width']) and _is_number(image['height']) and image['width'] > 0
            and image['height'] > 0):
        return f"width x height {image['width']!r} x {image['height']!r} is not positive"
    return None


def _coco_annotation_problem(ann: dict) -> Optional[str]:
    for key in ('image_id', 'category_id', 'bbox', 'area'):
        if key not in ann:
            return f'has no {key!r}'
    for key in ('image_id', 'category_id'):
        if not isinstance(ann[key], int):
            return f'{key} {ann[key]!r} is not an integer'
    bbox = ann['bbox']
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))):
        return f'bbox {bbox!r} is not 4 numbers [x, y, w, h]'
    if not _is_number(ann['area']):
        return f"area {ann['area']!r} is not a number"
    segm = ann.get('segmentation')
    if segm and not (isinstance(segm, dict) and 'counts' in segm and 'size' in segm) and not (
            isinstance(segm, list) and all(isinstance(p, list) for p in segm)):
        return 'segmentation is neither a list of polygons nor an RLE dict'
    return None


def check_coco(dataset, findings: Findings) -> None:
    """mmdet's CocoDataset family: the json's images, annotations and categories, the image
    files, the config's classes; log the images ``filter_empty_gt`` will skip."""
    try:
        with open(dataset.ann_file) as f:
            data = json.load(f)
    except ValueError as e:
        raise BadDataError(f'Bad data in {findings.where}: {dataset.ann_file} is not valid '
                           f'JSON ({e}).') from None
    if not (isinstance(data, dict) and isinstance(data.get('images'), list) and isinstance(
            data.get('categories'), list) and isinstance(data.get('annotations', []), list)):
        raise BadDataError(f'Bad data in {findings.where}: {dataset.ann_file} is not a COCO '
                           'annotation file (an object with the lists "images", "categories" '
                           'and "annotations").')
    categories = {}
    for i, cat in enumerate(data['categories']):
        if not (isinstance(cat, dict) and 'id' in cat and isinstance(cat.get('name'), str)):
            findings.add('malformed categories (need id and name)', f'categories[{i}]')
        else:
            categories[cat['id']] = cat['name']
    classes = dataset.metainfo.get('classes') or ()
    for name in classes:
        if name not in categories.values():
            findings.add('classes of the config missing from its categories', repr(name))
    selected = {cat_id for cat_id, name in categories.items() if name in classes}

    files = {}
    for i, image in enumerate(data['images']):
        problem = _coco_image_problem(image)
        if problem:
            findings.add('malformed image entries', f'images[{i}]: {problem}')
        else:
            files[image['id']] = image['file_name']

    annotated = set()
    known_ids = sorted(categories)
    for i, ann in enumerate(data.get('annotations', [])):
        if not isinstance(ann, dict):
            findings.add('malformed annotations', f'annotations[{i}] is not an object')
            continue
        name = f"annotation id {ann.get('id', '?')}"
        if ann.get('image_id') in files:
            name += f" ({files[ann['image_id']]})"
        problem = _coco_annotation_problem(ann)
        if problem:
            findings.add('malformed annotations', f'{name}: {problem}')
        elif ann['image_id'] not in files:
            findings.add('annotations of an image id not in its images',
                         f"{name}: image_id {ann['image_id']!r}")
        elif ann['category_id'] not in categories:
            findings.add(f'annotations with a category_id not in its categories {known_ids}',
                         f"{name}: category_id {ann['category_id']!r}")
        elif ann['category_id'] in selected:
            annotated.add(ann['image_id'])

    if _is_local(dataset):
        for path in missing_files(dataset.data_prefix.get('img', ''), files.values()):
            findings.add('images it lists that do not exist', path)
    findings.raise_if_any()

    filter_cfg = dataset.filter_cfg or {}
    empty = [f for image_id, f in files.items() if image_id not in annotated]
    if empty and not dataset.test_mode and filter_cfg.get('filter_empty_gt', False):
        shown = ', '.join(empty[:EXAMPLES]) + (' ...' if len(empty) > EXAMPLES else '')
        print_log(
            f'{findings.where}: skipping {len(empty)} of {len(files)} images of '
            f'{dataset.ann_file} that have no annotations of the classes '
            f'(filter_empty_gt=True, mmdet\'s convention): {shown}',
            logger='current')


def check_segmentation(dataset, findings: Findings) -> None:
    """mmseg's BaseSegDataset family: every image the dataset lists (its ann_file, or its
    image folder) and the segmentation map of each exist."""
    if not _is_local(dataset):
        return
    image_dir = dataset.data_prefix.get('img_path', '')
    if not dataset.ann_file and not osp.isdir(image_dir):
        findings.add('image folders that do not exist', image_dir)
        return
    infos = dataset.load_data_list()  # lists files only (mmseg's own logic)
    missing = set(missing_files('', [info['img_path'] for info in infos]))
    for path in sorted(missing):
        findings.add('images it lists that do not exist', path)
    maps = [
        i['seg_map_path'] for i in infos if i['img_path'] not in missing and i.get('seg_map_path')
    ]
    for path in missing_files('', maps):
        findings.add('images without their segmentation map', path)


def missing_files(prefix: str, names) -> list:
    """The paths ``osp.join(prefix, name)`` of ``names`` that are not files.

    Each folder is listed once (``os.scandir``: one call for its whole listing, where a stat
    per file costs one call each, a network round trip on a network file system). A name the
    listing does not show as a file is looked at with ``osp.isfile``, so the answer is
    ``osp.isfile``'s (symbolic links, case-insensitive file systems).
    """
    by_folder: Dict[str, List[str]] = {}
    for name in names:  # 'n01440764/x.JPEG': folder 'n01440764', relative to prefix
        folder, _, base = name.rpartition('/')
        if not folder and name.startswith('/'):
            folder = '/'  # a file at the root
        by_folder.setdefault(folder, []).append(base)
    missing = []
    for folder, bases in by_folder.items():
        where = osp.join(prefix, folder)
        try:
            with os.scandir(where or '.') as entries:
                files = {e.name for e in entries if e.is_file()}
        except OSError:  # missing, not a folder, not readable: isfile decides each path
            files = set()
        missing += [
            osp.join(where, base) for base in bases
            if base not in files and not osp.isfile(osp.join(where, base))
        ]
    return missing


def check_classification(dataset, findings: Findings) -> None:
    """mmpretrain's CustomDataset family with an ann_file: every line is ``<path> <label>``
    (as mmpretrain splits it), each label is a class index, each file exists."""
    if not dataset.ann_file:
        return  # samples found by scanning the folders: they exist and are labelled
    classes = dataset.CLASSES
    names = []
    for number, line in enumerate(list_from_file(dataset.ann_file), start=1):
        if dataset.with_label:
            filename, _, label = line.strip().rpartition(' ')
            if not filename or not label.lstrip('-').isdigit():
                findings.add("malformed lines (expected '<path> <integer label>')",
                             f'line {number} {line!r}')
                continue
            if classes is not None and not 0 <= int(label) < len(classes):
                findings.add(
                    f'labels out of range for {len(classes)} classes '
                    f'(0..{len(classes) - 1})', f'line {number} {line!r}')
                continue
        else:
            filename = line.strip()
            if not filename:
                findings.add('empty lines', f'line {number}')
                continue
        names.append(filename)
    if _is_local(dataset):
        for path in missing_files(dataset.img_prefix, names):
            findings.add('images it lists that do not exist', path)


# scope -> (module, dataset base class, its check)
CHECKS = {
    'mmdet': ('mmdet.datasets', 'CocoDataset', check_coco),
    'mmseg': ('mmseg.datasets', 'BaseSegDataset', check_segmentation),
    'mmpretrain': ('mmpretrain.datasets', 'CustomDataset', check_classification),
}

WAIT_FOR_CHECKS = datetime.timedelta(hours=2)  # how long the other ranks wait for the checks


def once_per_node(check, *args) -> None:
    """Run ``check(*args)`` in one process per machine of a distributed run; every process
    returns, or raises the first failure of the run.

    In each machine's lowest rank (ranks grouped by host name, so any launcher works) the
    check runs; the others wait for the outcome in a collective (all_gather_object). The
    process whose check failed raises its own exception; the others raise the same
    :class:`~mmdualtoken.errors.LaunchError` type with its message, or a LaunchError naming
    the rank and the exception otherwise. Every process reaches the collective whatever
    happened, so none waits until the timeout. The ranks wait in a gloo group (the default
    group where it is gloo, else one with a two-hour timeout: NCCL's watchdog would end ranks
    that wait longer than its timeout). Outside a process group it just runs.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return check(*args)
    group = None
    if dist.get_backend() != 'gloo':
        group = dist.new_group(backend='gloo', timeout=WAIT_FOR_CHECKS)
    try:
        outcomes = _check_where_lowest_rank(check, args, group)
    finally:
        if group is not None:
            dist.destroy_process_group(group)
    first = next((o for o in outcomes if o is not None), None)
    if first is not None:
        kind, message, where, host = first
        if kind is None:
            message = f'the checks before training failed in rank {where} ({host}): {message}'
        raise (kind or LaunchError)(message)


def _check_where_lowest_rank(check, args, group) -> list:
    """Every rank's outcome: None, or (LaunchError type or None, message, rank, host) for the
    others to raise; a rank whose own check failed raises its exception after the exchange."""
    rank, world = dist.get_rank(), dist.get_world_size()
    hosts = [None] * world
    dist.all_gather_object(hosts, socket.gethostname(), group=group)
    failure, outcome = None, None
    if hosts.index(hosts[rank]) == rank:
        try:
            check(*args)
        except Exception as error:  # handed to every rank below, then raised
            failure = error
            kind = type(error) if isinstance(error, LaunchError) else None
            message = str(error) if kind else f'{type(error).__name__}: {error}'
            outcome = (kind, message, rank, hosts[rank])
    outcomes = [None] * world
    dist.all_gather_object(outcomes, outcome, group=group)
    if failure is not None:
        raise failure
    return outcomes


def check_datasets(cfg: Config, splits) -> None:
    """Check the datasets of ``splits`` (e.g. ['train', 'val']) before the Runner is built.

    Each dataset config is built with ``lazy_init=True`` (the framework resolves its paths
    and classes, and reads nothing), then its annotations are checked by the framework's
    check in :data:`CHECKS`; other dataset types are left to the framework.

    Raises:
        BadDataError: one per dataset, listing every problem found in it.
    """
    from mmengine.registry import DefaultScope
    scope = cfg.get('default_scope')
    if scope not in CHECKS:
        return
    module, base_name, check = CHECKS[scope]
    base = getattr(importlib.import_module(module), base_name)
    registry = importlib.import_module(f'{scope}.registry').DATASETS
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        for where, dataset_cfg in _leaf_datasets(
                loader and loader.get('dataset'), f'{split}_dataloader.dataset'):
            with DefaultScope.overwrite_default_scope(scope):
                dataset = registry.build(dict(dataset_cfg, lazy_init=True, pipeline=[]))
            if not isinstance(dataset, base):
                continue
            source = dataset.ann_file or dataset.data_prefix.get('img_path', '') or ''
            if dataset.ann_file and not osp.isfile(dataset.ann_file) and _is_local(dataset):
                continue  # a missing file is launch.check_dataset_paths' error
            findings = Findings(where, source)
            check(dataset, findings)
            findings.raise_if_any()

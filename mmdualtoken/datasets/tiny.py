"""Small generated datasets in the real layouts (COCO, ADE20K, ImageNet), deterministic by seed.

Nothing is downloaded: the demo, the tests and anyone trying a config without the real data
train on scenes drawn here, which a model can actually learn:

* detection (COCO 2017 layout): squares, circles and triangles with boxes and polygon masks;
  each shape has its own colour family (jittered) on a textured background;
* segmentation (ADE20K layout, ``reduce_zero_label`` semantics): street-like scenes of
  ADE20K's first five classes (wall, building, sky, floor, tree); label 0 is "other";
* classification (ImageNet layout with meta/*.txt): four classes that differ in shape,
  texture and colour.
"""
import json
import math
import os
import os.path as osp
from typing import Callable, Iterable, Optional

import numpy as np
from PIL import Image, ImageDraw

DET_CLASSES = ('square', 'circle', 'triangle')
DET_COLOURS = ((200, 40, 40), (40, 170, 60), (50, 80, 210))  # one colour family per shape
SEG_CLASSES = ('wall', 'building', 'sky', 'floor', 'tree')  # ADE20K's classes 1..5
CLS_CLASSES = ('red_disc', 'green_square', 'blue_stripes', 'yellow_checker')


def _progress(items: Iterable, desc: str, show: bool):
    if not show:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit='img')


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.integers(90, 170, size=3)
    noise = rng.normal(0, 12, size=(height, width, 1))
    ramp = np.linspace(-20, 20, width)[None, :, None]
    pixels = np.clip(base[None, None, :] + noise + ramp, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _jitter(rng: np.random.Generator, colour) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-35, 36), 0, 255)) for c in colour)


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list:
    if kind == 'square':
        corners = 4
        angle = angle + math.pi / 4
    elif kind == 'triangle':
        corners = 3
    else:
        corners = 24
    return [(cx + r * math.cos(angle + 2 * math.pi * k / corners),
             cy + r * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]


def _polygon_area(points: list) -> float:
    xs, ys = zip(*points)
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def make_detection_split(root: str,
                         split: str,
                         num_images: int,
                         seed: int,
                         size=(320, 256),
                         max_objects: int = 3,
                         show_progress=False) -> str:
    """Write ``root/{split}2017/*.jpg`` and ``root/annotations/instances_{split}2017.json``."""
    width, height = size
    rng = np.random.default_rng(seed)
    image_dir = osp.join(root, f'{split}2017')
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for image_id in _progress(range(1, num_images + 1), f'detection {split}', show_progress):
        img = _background(rng, width, height)
        draw = ImageDraw.Draw(img)
        placed = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            label = int(rng.integers(len(DET_CLASSES)))
            for _attempt in range(20):  # avoid heavy overlap, so every box is visible
                r = float(rng.uniform(0.1, 0.22) * min(width, height))
                cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
                if all(math.hypot(cx - px, cy - py) > r + pr for px, py, pr in placed):
                    break
            else:
                continue
            placed.append((cx, cy, r))
            polygon = _shape_polygon(DET_CLASSES[label], cx, cy, r, float(rng.uniform(0, 0.5)))
            draw.polygon(polygon, fill=_jitter(rng, DET_COLOURS[label]))
            xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=label + 1,
                    bbox=[round(x0, 2),
                          round(y0, 2),
                          round(x1 - x0, 2),
                          round(y1 - y0, 2)],
                    area=round(_polygon_area(polygon), 2),
                    iscrowd=0,
                    segmentation=[[round(v, 2) for p in polygon for v in p]]))
        file_name = f'{image_id:06d}.jpg'
        img.save(osp.join(image_dir, file_name), quality=95)
        images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(DET_CLASSES)]
    ann_file = osp.join(root, 'annotations', f'instances_{split}2017.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return ann_file


def make_segmentation_split(root: str,
                            split: str,
                            num_images: int,
                            seed: int,
                            size=(160, 128),
                            show_progress=False):
    """Write ``root/images/{split}/*.jpg`` and ``root/annotations/{split}/*.png``.

    Label values: 0 = other (ignored under reduce_zero_label), k + 1 = SEG_CLASSES[k].
    """
    width, height = size
    rng = np.random.default_rng(seed)
    folder = 'training' if split == 'train' else 'validation'
    image_dir = osp.join(root, 'images', folder)
    label_dir = osp.join(root, 'annotations', folder)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    colours = {
        'wall': (180, 170, 150),
        'building': (110, 110, 120),
        'sky': (120, 170, 235),
        'floor': (120, 85, 50),
        'tree': (40, 120, 40)
    }
    for index in _progress(range(num_images), f'segmentation {split}', show_progress):
        label = np.zeros((height, width), np.uint8)
        horizon = int(rng.uniform(0.35, 0.6) * height)
        floor_top = int(rng.uniform(0.7, 0.85) * height)
        label[:horizon] = SEG_CLASSES.index('sky') + 1
        label[horizon:floor_top] = SEG_CLASSES.index('wall') + 1
        label[floor_top:] = SEG_CLASSES.index('floor') + 1
        for _ in range(int(rng.integers(1, 4))):  # buildings rising over the horizon
            x0 = int(rng.uniform(0, 0.8) * width)
            bw = int(rng.uniform(0.15, 0.35) * width)
            top = int(rng.uniform(0.1, 0.9) * horizon)
            label[top:floor_top, x0:x0 + bw] = SEG_CLASSES.index('building') + 1
        yy, xx = np.mgrid[:height, :width]
        for _ in range(int(rng.integers(0, 3))):  # round tree crowns
            cx, cy = rng.uniform(0, width), rng.uniform(0.2, 0.7) * height
            r = rng.uniform(0.08, 0.16) * height
            label[(xx - cx)**2 + (yy - cy)**2 < r * r] = SEG_CLASSES.index('tree') + 1
        label[rng.random((height, width)) < 0.002] = 0  # a few "other" pixels
        pixels = np.zeros((height, width, 3), np.float64)
        for k, name in enumerate(SEG_CLASSES):
            pixels[label == k + 1] = _jitter(rng, colours[name])
        pixels += rng.normal(0, 10, size=(height, width, 1))
        # texture: window rows on buildings, stripes on the floor
        pixels[(label == 2) & (yy % 8 < 3) & (xx % 8 < 4)] *= 0.6
        pixels[(label == 4) & ((xx + yy) % 10 < 3)] *= 0.8
        name = f'tiny_{split}_{index:06d}'
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            osp.join(image_dir, name + '.jpg'), quality=95)
        Image.fromarray(label).save(osp.join(label_dir, name + '.png'))


def _draw_class_image(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    img = _background(rng, size, size)
    draw = ImageDraw.Draw(img)
    name = CLS_CLASSES[label]
    r = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    if name == 'red_disc':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, (210, 40, 40)))
    elif name == 'green_square':
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, (40, 180, 60)))
    elif name == 'blue_stripes':
        period = int(rng.integers(6, 12))
        colour = _jitter(rng, (40, 70, 220))
        for x in range(int(rng.integers(period)), size, period):
            draw.rectangle([x, 0, x + period // 2, size], fill=colour)
    else:
        cell = int(rng.integers(6, 12))
        colour = _jitter(rng, (230, 210, 40))
        for y in range(0, size, cell):
            for x in range((y // cell) % 2 * cell, size, 2 * cell):
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
    return img


def make_classification_split(root: str,
                              split: str,
                              per_class: int,
                              seed: int,
                              size: int = 96,
                              show_progress=False) -> str:
    """Write ``root/{split}/<class>/*.JPEG`` and ``root/meta/{split}.txt`` (path label)."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    lines = []
    for index in _progress(
            range(per_class * len(CLS_CLASSES)), f'classification {split}', show_progress):
        label = index % len(CLS_CLASSES)
        folder = osp.join(root, split, CLS_CLASSES[label])
        os.makedirs(folder, exist_ok=True)
        rel = f'{CLS_CLASSES[label]}/{split}_{index:06d}.JPEG'
        _draw_class_image(rng, label, size).save(osp.join(root, split, rel), 'JPEG', quality=95)
        lines.append(f'{rel} {label}')
    ann_file = osp.join(root, 'meta', f'{split}.txt')
    with open(ann_file, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return ann_file


# what each task writes: (function, train kwargs, val kwargs)
TASKS = {
    'coco': (make_detection_split, dict(num_images=96), dict(num_images=24)),
    'ade': (make_segmentation_split, dict(num_images=64), dict(num_images=16)),
    'imagenet': (make_classification_split, dict(per_class=32), dict(per_class=8)),
}
TASK_DIRS = {'coco': 'coco', 'ade': 'ade/ADEChallengeData2016', 'imagenet': 'imagenet'}


def make_tiny_datasets(root: str = 'data/tiny',
                       tasks: Iterable[str] = tuple(TASKS),
                       seed: int = 0,
                       scale: float = 1.0,
                       show_progress: bool = False,
                       log: Optional[Callable[[str], None]] = None) -> dict:
    """Write the tiny datasets under ``root/{coco,ade/ADEChallengeData2016,imagenet}``.

    ``scale`` multiplies the number of images (tests use fewer). The val split has its own
    seed, so it never repeats a training image. Returns {task: its directory}.
    """
    written = {}
    for offset, task in enumerate(tasks):
        if task not in TASKS:
            raise ValueError(f'unknown tiny dataset {task!r}; choose from {list(TASKS)}')
        make, train_kwargs, val_kwargs = TASKS[task]
        directory = osp.join(root, TASK_DIRS[task])
        for split, kwargs, split_seed in (('train', train_kwargs, seed * 100 + 2 * offset),
                                          ('val', val_kwargs, seed * 100 + 2 * offset + 1)):
            scaled = {k: max(2, int(round(v * scale))) for k, v in kwargs.items()}
            make(directory, split, seed=split_seed, show_progress=show_progress, **scaled)
        if log:
            log(f'{task}: {directory}')
        written[task] = directory
    return written

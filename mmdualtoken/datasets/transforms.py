"""Loading transforms that turn bad files into a :class:`BadDataError` naming the file.

Registered in mmengine's root TRANSFORMS registry, so mmpretrain, mmdet and mmseg pipelines
all find them (``import mmdualtoken.datasets.transforms``, e.g. in ``custom_imports``).
What they check needs the decoded sample, so they run when the sample is loaded; what the
annotation files alone show is checked before training (:mod:`.checks`).
"""
import io
import logging
from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine import fileio
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS

from ..errors import BadDataError

# the bytes a complete file of these formats ends with (trailing zero padding aside)
JPEG_START, JPEG_END = b'\xff\xd8', b'\xff\xd9'
PNG_START, PNG_END = b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82'
TAIL = 64  # bytes of the end looked at


def truncation(data: bytes) -> Optional[str]:
    """Why ``data`` (a whole JPEG or PNG file) is cut short, or None if it is complete.

    A complete JPEG ends with its end-of-image marker, a PNG with its IEND chunk: looking at
    the last 64 bytes costs a few dozen byte comparisons, nothing next to decoding. Only a
    file without that ending (truncated, or complete with bytes appended after it as some
    cameras write) is decoded by PIL, whose decoder fails on a truncated file and decides.
    OpenCV does not: depending on its version it returns None or the decoded part (grey
    below the cut) with a warning on stderr.
    """
    if data.startswith(JPEG_START):
        ending = 'its JPEG data stops before the end-of-image marker'
        complete = data[-TAIL:].rstrip(b'\x00').endswith(JPEG_END)
    elif data.startswith(PNG_START):
        ending = 'its PNG data stops before the IEND chunk'
        complete = data[-TAIL:].rstrip(b'\x00').endswith(PNG_END)
    else:
        return None
    if complete:
        return None
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception:  # PIL raises OSError, SyntaxError or ValueError by format
        return ending
    return None


def read_checked(get, filename: str) -> tuple:
    """``(bytes, None)`` for a complete file, ``(None, problem)`` for a missing or truncated
    one; ``get`` reads a file's bytes (the loaders' file backend)."""
    try:
        data = get(filename)
    except FileNotFoundError:
        return None, 'the file does not exist'
    problem = truncation(data)
    return (None, f'the file is truncated: {problem}') if problem else (data, None)


@TRANSFORMS.register_module()
class LoadCheckedImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that fails with one line naming the file when the image
    is missing, truncated or cannot be decoded.

    mmcv's transform raises a bare FileNotFoundError or AssertionError for those, and with
    OpenCV 4 decodes a truncated JPEG silently into a partly grey image. The arguments are
    mmcv's; with ``ignore_empty=True`` a bad file is skipped (the sample is replaced by
    another, mmengine's convention for a pipeline that returns None) and logged.
    """

    def _fail(self, filename: str, problem: str) -> None:
        if self.ignore_empty:
            print_log(
                f'Skipped the image {filename}: {problem}', logger='current', level=logging.WARNING)
            return None
        raise BadDataError(f'Bad image {filename}: {problem}')

    def transform(self, results: dict) -> Optional[dict]:
        filename = results['img_path']
        if self.file_client_args is not None:
            get = fileio.FileClient.infer_client(self.file_client_args, filename).get
        else:

            def get(name):
                return fileio.get(name, backend_args=self.backend_args)

        img_bytes, problem = read_checked(get, filename)
        if problem:
            return self._fail(filename, problem)
        try:
            img = mmcv.imfrombytes(img_bytes, flag=self.color_type, backend=self.imdecode_backend)
        except Exception as e:  # each decoding backend raises its own
            return self._fail(filename, f'it cannot be decoded ({e})')
        if img is None:
            return self._fail(filename, f'it cannot be decoded ({self.imdecode_backend} '
                              'returned nothing)')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class LoadCheckedSegMap(BaseTransform):
    """mmseg's ``LoadAnnotations`` that fails with one line naming the file when the
    segmentation map is missing, truncated or cannot be decoded.

    mmseg's transform decodes a truncated PNG into an ``OSError: image file is truncated``
    traceback that names no file. This one reads and checks the file as
    :class:`LoadCheckedImageFromFile` does (:func:`read_checked`), then lets mmseg's transform,
    built from the same arguments, load it (a second read, from the page cache). Put
    :class:`CheckSegMap` after it. Training pipelines only: the inferencers remove mmseg's
    ``LoadAnnotations`` from test pipelines by its name.

    Args:
        **kwargs: mmseg's ``LoadAnnotations`` arguments (``reduce_zero_label``,
            ``backend_args``, ``imdecode_backend``).
    """

    def __init__(self, **kwargs):
        self.load = TRANSFORMS.build(dict(type='mmseg.LoadAnnotations', **kwargs))

    def transform(self, results: dict) -> dict:
        path = results['seg_map_path']
        _, problem = read_checked(
            lambda name: fileio.get(name, backend_args=self.load.backend_args), path)
        if problem:
            raise BadDataError(f'Bad segmentation map {path}: {problem}')
        try:
            return self.load(results)
        except (OSError, ValueError, SyntaxError) as e:  # PIL's and OpenCV's decode errors
            raise BadDataError(f'Bad segmentation map {path}: it cannot be decoded ({e})') \
                from None

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.load!r})'


@TRANSFORMS.register_module()
class CheckSegMap(BaseTransform):
    """Fail with one line naming the file when a segmentation map does not fit its image.

    Place it right after :class:`LoadCheckedSegMap` (or mmseg's ``LoadAnnotations``, as the
    test pipelines have); without a loaded map (inference) it
    does nothing. It checks that the map has the image's
    original size (``ori_shape``, so a Resize between the two does not matter) and one
    channel, and that every value is a class index or the ignore index, after
    ``reduce_zero_label`` and the dataset's label map. Without it, a map of another size is
    cropped and resized out of step with its image, and a value out of range reaches the loss
    as an index error (a device-side assert on GPUs) that names no file. Cost: a few
    comparisons per pixel, less than decoding the PNG.

    Args:
        num_classes (int): The number of classes the model predicts.
        ignore_index (int): The label ignored by the loss. Defaults to 255.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results:
            return results  # inference: the inferencers remove LoadAnnotations
        seg = results['gt_seg_map']
        path = results.get('seg_map_path')
        if seg.ndim != 2:
            raise BadDataError(f'Bad segmentation map {path}: it has shape {seg.shape}, '
                               'not a single-channel label image')
        height, width = results['ori_shape'][:2]
        if seg.shape != (height, width):
            raise BadDataError(
                f'Bad segmentation map {path}: it is {seg.shape[0]}x{seg.shape[1]} (height x '
                f"width) but its image {results.get('img_path')} is {height}x{width}")
        bad = (seg >= self.num_classes) & (seg != self.ignore_index)
        if bad.any():
            values = np.unique(seg[bad])[:5].tolist()
            allowed = (f'neither a class index (0..{self.num_classes - 1}) nor the ignore '
                       f'index {self.ignore_index}')
            if results.get('reduce_zero_label', False):  # it subtracted 1 from each value
                problem = (f'value(s) {[v + 1 for v in values]} out of range: with '
                           f'reduce_zero_label they become {values}, {allowed}')
            else:
                problem = f'value(s) {values} out of range: {allowed}'
            raise BadDataError(f'Bad segmentation map {path}: {problem}')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')

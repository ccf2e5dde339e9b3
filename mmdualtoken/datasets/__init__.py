from .tiny import (CLS_CLASSES, DET_CLASSES, SEG_CLASSES, make_classification_split,
                   make_detection_split, make_segmentation_split, make_tiny_datasets)

__all__ = [
    'CLS_CLASSES', 'DET_CLASSES', 'SEG_CLASSES', 'make_classification_split',
    'make_detection_split', 'make_segmentation_split', 'make_tiny_datasets'
]

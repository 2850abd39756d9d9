"""Data: sources (TFDS, image folders), seeded splits, and the batch pipeline.

sources.py loads a dataset into host memory (`load` -> `Dataset` of `ArraySplit`s, which
storage.py decodes and holds), splits.py makes seeded parts of a split, pipeline.py turns
index lists into batches (training epochs, the search's validation stream, evaluation). The names below are the
package's interface.
"""

from mixnas_tf.data.pipeline import CROP_PADDING
from mixnas_tf.data.pipeline import EVAL_CROP_FRACTION
from mixnas_tf.data.pipeline import Deferred
from mixnas_tf.data.pipeline import eval_batches
from mixnas_tf.data.pipeline import eval_order
from mixnas_tf.data.pipeline import materialize
from mixnas_tf.data.pipeline import num_eval_batches
from mixnas_tf.data.pipeline import steps_per_epoch
from mixnas_tf.data.pipeline import stream_batches
from mixnas_tf.data.pipeline import train_batches
from mixnas_tf.data.sources import ACCEPTED_SPECS
from mixnas_tf.data.sources import CIFAR_MEAN
from mixnas_tf.data.sources import CIFAR_STD
from mixnas_tf.data.sources import IMAGENET_MEAN
from mixnas_tf.data.sources import IMAGENET_STD
from mixnas_tf.data.sources import Dataset
from mixnas_tf.data.sources import canonical_spec
from mixnas_tf.data.sources import load
from mixnas_tf.data.splits import split
from mixnas_tf.data.splits import subsample
from mixnas_tf.data.storage import MAX_RAW_IMAGE_SIZE
from mixnas_tf.data.storage import ArraySplit

__all__ = ["ACCEPTED_SPECS", "CIFAR_MEAN", "CIFAR_STD", "CROP_PADDING", "EVAL_CROP_FRACTION",
           "IMAGENET_MEAN", "IMAGENET_STD", "MAX_RAW_IMAGE_SIZE", "ArraySplit", "Dataset",
           "Deferred", "canonical_spec",
           "eval_batches", "eval_order", "load", "materialize", "num_eval_batches", "split",
           "steps_per_epoch", "stream_batches", "subsample", "train_batches"]

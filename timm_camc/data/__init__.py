from .dataset import CorruptImageError, ImageListDataset, LongTailSubset, dataset_targets
from .factory import LongTailInfo, class_counts_of, create_lt_datasets
from .loader import TRAIN_CROP_MODES, create_train_loader, create_train_transform
from .long_tail import PROFILES, long_tail_counts, long_tail_indices, read_list_file, write_list_file
from .samplers import *

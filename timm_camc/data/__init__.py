from .dataset import CorruptImageError, ImageListDataset, LongTailSubset, RankShard, dataset_class_names, \
    dataset_targets
from .factory import LongTailInfo, class_counts_of, create_image_dataset, create_lt_datasets, write_lt_subset
from .loader import TRAIN_CROP_MODES, check_pad_crop, create_train_loader, create_train_transform
from .long_tail import PROFILES, long_tail_counts, long_tail_indices, read_list_file, write_list_file
from .samplers import *
from .sampler_factory import SAMPLER_NAMES, SAMPLERS, SamplerEntry, create_sampler, sampler_options
from .in_memory import InMemoryEvalLoader, InMemoryTrainLoader, augment_seed, decode_images, in_memory_blockers

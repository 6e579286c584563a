from .calibration import CALIBRATIONS, BatchCalibration, ClassCalibration, GlobalCalibration, TargetCalibration
from .camc import CamcHead, CamcOutput, check_class_indices
from .head_options import HEAD_DEFAULTS, HEAD_OPTIONS, HeadOption
from .classifier import LinearClassifier, NormedLinear, l2_normalize, tau_normalize_

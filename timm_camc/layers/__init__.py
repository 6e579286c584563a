from .camc import CALIBRATIONS, CamcHead, CamcOutput, ClassCalibration, GlobalCalibration, TargetCalibration
from .head_options import HEAD_DEFAULTS, HEAD_OPTIONS, HeadOption
from .classifier import LinearClassifier, NormedLinear, l2_normalize

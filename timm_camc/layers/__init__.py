from .camc import (
    CALIBRATIONS,
    HEAD_DEFAULTS,
    HEAD_OPTIONS,
    CamcHead,
    CamcOutput,
    ClassCalibration,
    GlobalCalibration,
    HeadOption,
    TargetCalibration,
)
from .classifier import LinearClassifier, NormedLinear, l2_normalize

from .camc import (
    CALIBRATIONS,
    CamcHead,
    CamcOutput,
    ClassCalibration,
    GlobalCalibration,
    LinearClassifier,
    NormedLinear,
    l2_normalize,
)

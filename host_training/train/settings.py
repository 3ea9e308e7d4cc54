"""All training settings, validated up front in one frozen object (as Model Maker does).

Defaults are the recipe that works on photos of an object in a slot or in a hand:
ImageNet MobileNetV2, MobileNetV2's own [-1, 1] scaling inside the model, class weights,
label smoothing, augmentation without mirroring, a head trained on cached features, then
fine-tuning of the upper base with batch norm kept in inference mode.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from device.errors import ConfigError

ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


class Augment(BaseModel):
    """Augmentation for a note in a slot, on a table or in a hand. No mirroring by default:
    a mirrored note never occurs in the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rotation: float = Field(0.08, ge=0, le=0.5, description="max rotation, fraction of a turn")
    rot90: bool = Field(True, description="also random quarter turns (notes lie any way up)")
    zoom: float = Field(0.3, ge=0, lt=1, description="max zoom in/out (fraction)")
    translate: float = Field(0.15, ge=0, lt=0.5, description="max shift (fraction of size)")
    brightness: float = Field(0.25, ge=0, lt=1, description="max brightness change (fraction)")
    contrast: float = Field(0.3, ge=0, lt=1, description="max contrast change (fraction)")
    flip: bool = Field(False, description="random horizontal flips")
    perspective: float = Field(0.08, ge=0, lt=0.3,
                               description="max corner shift of the perspective tilt (fraction)")
    white_balance: float = Field(0.15, ge=0, lt=1, description="max per-channel gain change")
    glare: float = Field(0.2, ge=0, le=1, description="probability of a glare spot")
    blur: float = Field(0.3, ge=0, le=1, description="probability of focus or motion blur")
    noise: float = Field(6.0, ge=0, le=50, description="max sensor noise (std, 0..255 units)")
    jpeg: float = Field(0.4, ge=0, le=1, description="probability of JPEG re-compression")
    paste: float = Field(0.5, ge=0, le=1,
                         description="probability a note crop is pasted onto another background")


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path
    out: Path
    val_data: Path | None = None
    val_split: float = Field(0.2, gt=0, lt=0.9)
    input_size: int = Field(224, ge=32, le=512)
    roi: tuple[float, float, float, float] | None = Field(
        None, description="crop every image to this region (x, y, width, height, fractions) "
        "first, exactly as the device crops a [[camera.roi]]")
    alpha: float = 1.0
    weights: str = Field("imagenet", description="imagenet, none, or a path to a .h5/.keras file")
    epochs: int = Field(30, ge=0, le=1000, description="head epochs on cached features")
    fine_tune_epochs: int = Field(20, ge=0, le=1000)
    fine_tune_from: int | str = Field(
        -1, description="first base layer (index or name) to fine-tune; -1 = the default: "
        "layer 100 with pretrained weights, 0 (everything) without")
    batch_size: int = Field(32, ge=1, le=1024)
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="head learning rate")
    fine_tune_learning_rate: float = Field(
        -1.0, description="-1 = 1e-4 with pretrained weights, 1e-3 without")
    dropout: float = Field(0.2, ge=0, lt=1)
    label_smoothing: float = Field(0.1, ge=0, lt=0.5)
    patience: int = Field(5, ge=1, description="early stopping on validation loss")
    feature_copies: int = Field(4, ge=0, le=32,
                                description="augmented copies per image for cached features")
    augment: Augment = Augment()
    class_weights: bool = True
    representative_count: int = Field(200, ge=1, description="images for int8 calibration")
    max_int8_drop: float = Field(2.0, ge=0, le=100,
                                 description="fail when int8 accuracy is this many points lower")
    golden_per_class: int = Field(1, ge=0, le=20)
    seed: int = 42
    name: str = ""
    version: str = ""
    resize: str = Field("stretch", pattern="^(stretch|center_crop|letterbox)$")
    negatives: Path | None = Field(None, description="folder of images of anything that is "
                                   "not a class: trained as the background class")
    boxes: Path | None = Field(None, description="YOLO boxes CSV: crop-to-box training and "
                               "negatives mined from the frames")
    background_label: str = "background"
    max_false_accept: float = Field(0.005, gt=0, lt=1, description="per-class false-accept "
                                    "rate the class thresholds are chosen for (validation)")
    ood: str = Field("class_mean_cosine", pattern="^(class_mean_cosine|max_softmax|none)$")
    ood_keep: float = Field(0.99, gt=0.5, le=1, description="share of correctly classified "
                            "validation notes the OOD threshold lets through")
    score_keep: float = Field(0.95, gt=0.5, le=1, description="share of correctly classified "
                              "validation notes whose top-1 score reaches the class "
                              "thresholds (max-softmax on top of the OOD rule; 1 = off)")
    epoch_samples: int = Field(0, ge=0, description="samples per fine-tuning epoch, drawn "
                               "at random (0 = the whole training pool)")
    negative_eval: Path | None = Field(None, description="a negative set evaluated (never "
                                       "trained or calibrated on) for the report")
    loso: bool = Field(True, description="leave-one-series-out figures (head on frozen "
                       "features) in the report")
    other: Path | None = Field(None, description="banknotes-other folder (irr/, eur/, "
                               "vnd-phone/): the bundle is evaluated on its evaluation part")
    other_exposure: bool = Field(False, description="train on the train part of --other's "
                                 "irr/eur as background, pasted onto scenes (outlier exposure)")
    refused_labels: tuple[str, ...] = Field((), description="classes learned in order to "
                                            "refuse them (--refuse): never accepted")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if v not in ALPHAS:
            raise ValueError(f"alpha must be one of {ALPHAS} (MobileNetV2's widths)")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if v not in ("imagenet", "none") and not Path(v).is_file():
            raise ValueError(f"weights {v!r} is not 'imagenet', 'none' or an existing file")
        return v

    @model_validator(mode="after")
    def _roi_and_boxes(self) -> TrainSettings:
        if self.roi is not None and self.boxes is not None:
            raise ValueError("roi and boxes do not go together: the boxes are in the whole "
                             "image's coordinates; crop with one or the other")
        return self

    @model_validator(mode="after")
    def _exposure_needs_other(self) -> TrainSettings:
        if self.other_exposure and self.other is None:
            raise ValueError("other_exposure needs --other DIR (the folder of real notes "
                             "that are not ours)")
        return self

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    @property
    def ft_from(self) -> int | str:
        if self.fine_tune_from == -1:
            return 100 if self.pretrained else 0
        return self.fine_tune_from

    @property
    def ft_lr(self) -> float:
        if self.fine_tune_learning_rate > 0:
            return self.fine_tune_learning_rate
        return 1e-4 if self.pretrained else 1e-3

    @property
    def bundle_name(self) -> str:
        return self.name or self.out.name


def make_settings(**kwargs) -> TrainSettings:
    """Validate settings, raising ConfigError that names each bad option."""
    try:
        return TrainSettings(**{k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as err:
        lines = [f"  --{str(e['loc'][-1]).replace('_', '-')}: "
                 f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
        raise ConfigError("invalid training settings:\n" + "\n".join(lines)) from None

"""Typed settings: one :class:`PipelineSettings` flows from an algorithm into the engine.

Every field is JSON-serialisable (``to_dict``/``from_dict``) because the model bundle records the exact
settings a model was trained with. Defaults are the papers' (UniDiff, SatDiFuser) unless a comment says why not, with the measurements in
BENCHMARKS.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Optional, Tuple

MODALITY_IDS = {"prgb": 1, "pca": 2, "sar": 3, "dsm": 4}
# The names and ranges the dialogs offer and the engine accepts, defined once (QGIS- and torch-free).
DIFFUSION_STEPS = 1000  # steps of the cosine noise schedule (Nichol & Dhariwal 2021): timesteps 0..999
PRESET_LR = {"paper": 3e-3, "public": 1e-4}  # FiLM adaptation lr: UniDiff's paper vs its public code
HEAD_KINDS = ("forest", "mlp")
FUSIONS = ("concat", "global", "local", "moe")  # UniDiff's feature fusions of the MLP head


@dataclass
class RepresentationSettings:
    rgb_bands: Optional[Tuple[int, int, int]] = None  # 1-based HSI band numbers; None = by wavelength
    rgb_wavelengths_nm: Tuple[float, float, float] = (640.0, 550.0, 460.0)
    pca_sample_size: int = 200_000  # PCA fitted on at most this many random valid pixels
    stretch_percentiles: Tuple[float, float] = (2.0, 98.0)
    sar_db: Optional[bool] = None  # None = detect from metadata / value range
    sar_polarisation: str = "auto"  # auto | single | dual | quad
    sar_gamma: float = 0.75
    sample_size: int = 200_000  # pixels sampled for percentile statistics


BACKBONE_SOURCES = ("auto", "untrained", "prior", "imagenet", "scene")


@dataclass
class BackboneSettings:
    # auto: the ImageNet ADM when one is installed (checkpoint, $DIFFLC_BACKBONE or the download cache), else
    # paths.AUTO_FALLBACK (the most accurate of the others measured, BENCHMARKS.md); untrained: a seeded,
    # randomly initialised compact ADM; prior: the shipped remote-sensing prior, FiLM-adapted; imagenet: the
    # ImageNet ADM (must be found); scene: a compact network trained from scratch on the scene
    source: str = "auto"
    checkpoint: Optional[str] = None  # ImageNet ADM 64x64 file given explicitly (wins over auto)
    # denoising steps / batch that train the compact backbone on the scene's patches: sized so a 512x512 scene
    # trains in minutes on a 2-core CPU (an untrained network measured as good: BENCHMARKS.md, "Accuracy")
    compact_steps: int = 300
    compact_batch_size: int = 8
    compact_lr: float = 2e-3
    patch_pool: int = 256  # random 64x64 windows read from the scene for backbone training / adaptation


@dataclass
class AdaptSettings:
    steps: Optional[int] = None  # None = the backbone's default (adaptation.default_adapt_steps)
    lr: float = 3e-3  # paper; the public code used 1e-4 (preset "public")
    batch_size: Optional[int] = None  # None = 32 for the ImageNet ADM (paper), 8 for the compact prior
    weight_decay: float = 0.0  # applied to trainable tensors only
    scope: str = "decoder"  # decoder = label_emb + output_blocks.*.emb_layers; all = every emb_layers
    ema_decay: Optional[float] = None
    preset: str = "paper"  # paper | public
    # modalities the adaptation sees; None = all of the scene's, pRGB the anchor in every batch (UniDiff). A
    # subset without pRGB reproduces the paper's "PCA alone" ablation (Table 6)
    modalities: Optional[Tuple[str, ...]] = None
    # what BACKBONE_SOURCE=auto may spend on FiLM adaptation of the default length, from one timed step on this
    # device: the whole schedule when it fits, else as many steps as fit (at least a tenth of it), else the
    # untrained compact network (adaptation.plan_adaptation). None = no limit. An explicit source or ADAPT_STEPS
    # is never changed, only its estimate logged
    time_budget_s: Optional[float] = 1800.0


@dataclass
class FeatureSettings:
    timesteps: Tuple[int, ...] = (200,)
    blocks: Optional[Tuple[int, ...]] = None  # decoder block indices; None = backbone's default pair
    fusion: str = "concat"  # concat | global | local | moe
    noise_seed: int = 0
    batch_size: int = 16


@dataclass
class HeadSettings:
    # forest = Random Forest on diffusion features + the pixel's bands (the most accurate head measured:
    # BENCHMARKS.md, issue 5); mlp = the UniDiff MLP (with FeatureSettings.fusion) as in the paper
    kind: str = "forest"
    trees: int = 500  # forest size
    # forest only: also grow a forest on the pixel's bands alone and keep it instead when its out-of-bag
    # predictions beat the one with diffusion features on the training labels (one-sided sign test over the
    # pixels where they disagree, p below this; 0 = always keep the diffusion features). On the flood chip the
    # features cost ~1 OA and this test catches it; on EnMAP west (74 labels) it never fires (BENCHMARKS.md)
    feature_check_p: float = 0.1
    # how the check decides (engine.heads.selection): best = the higher mean per-class recall of the out-of-bag
    # predictions (ties keep the features; the most accurate rule measured, BENCHMARKS.md issue 20); one-se = the
    # same with the one-standard-error rule toward feature_check_prefers; sign = 0.2's sign test with feature_check_p
    feature_check_rule: str = "best"
    # the option the rule favours when the evidence does not clear the noise: features (the configuration that
    # measured more accurate on the benchmark scenes) or bands (the simpler model)
    feature_check_prefers: str = "features"
    hidden: Tuple[int, ...] = (128,)
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 30
    val_fraction: float = 0.2  # stratified, drawn from the TRAINING labels only
    class_weighting: bool = False  # optional; inverse-frequency weights trade OA for AA
    include_spectrum: bool = True  # the pixel's own (standardised) bands also reach the head


@dataclass
class SpatialSettings:
    """Spatial regularisation of the class-probability map before the argmax (engine.tasks.spatial)."""

    # guided = the guided filter steered by the scene's principal components (edge-aware: a class boundary the
    # image shows is kept); gaussian = isotropic Gaussian (issue 12's); none = off
    method: str = "guided"
    sigma: Optional[float] = None  # px; set = a fixed Gaussian (0 = off); None = chosen on the training labels
    candidates: Tuple[float, ...] = (0.0, 0.7, 1.0, 1.5, 2.0, 3.0)  # Gaussian σ (px)
    guided_radii: Tuple[int, ...] = (1, 2, 3, 4)  # guided filter window radii (px)
    guided_eps: Tuple[float, ...] = (0.001, 0.01)  # guided filter ridge (guide in [0, 1])
    folds: int = 5  # fewer when the largest class has fewer labels
    repeats: int = 2  # fold assignments averaged where labels are few (below repeat_below)
    repeat_below: int = 500
    cv_trees: int = 100  # trees of each cross-validation forest
    # engine.heads.selection's rule on mean per-class recall: best = the highest (ties to the milder option; the
    # most accurate measured), one-se = the one-standard-error rule toward no regularisation; accuracy = the rule
    # of 0.2 (best OA, ties to the higher true-class probability, Gaussian candidates), a benchmark control
    selection: str = "best"


@dataclass
class SelfTrainingSettings:
    """Self-training on the scene's own unlabelled pixels (engine.tasks.selftrain)."""

    mode: str = "auto"  # auto = used when the training labels show it helps (selection rule); on; off
    windows: int = 16  # unlabelled 64 x 64 windows sampled from the scene (memory independent of its size)
    per_class: int = 3  # pseudo-labels per class = this x the mean labels per class (class-balanced), at most 1000
    rounds: Tuple[int, ...] = (1, 2)  # candidates of the rule
    selection: str = "best"  # engine.heads.selection rule: best | one-se (toward off)


@dataclass
class TileSettings:
    patch: int = 64
    # windows side by side: each pixel is predicted from its home window (engine.tasks.tiling), and overlapping
    # windows (32) cost up to 4x the network passes for no measured gain (BENCHMARKS.md, "Speed and scale")
    stride: int = 64


@dataclass
class CleanupSettings:
    """Map clean-up after classification (engine.tasks.cleanup): majority filter, then a minimum mapping unit."""

    sieve_pixels: int = 0  # minimum mapping unit in pixels: patches smaller than this merge into a neighbour; 0 = off
    sieve_area_ha: float = 0.0  # the same as an area (hectares), converted with the map's pixel area; 0 = off
    connectivity: int = 4  # 4 (edges) or 8 (edges and corners) connect a patch's pixels
    majority_radius: int = 0  # majority (modal) filter over a (2r+1) x (2r+1) window; 0 = off

    @property
    def active(self) -> bool:
        return self.sieve_pixels > 1 or self.sieve_area_ha > 0 or self.majority_radius > 0


@dataclass
class PipelineSettings:
    representation: RepresentationSettings = field(default_factory=RepresentationSettings)
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    adaptation: AdaptSettings = field(default_factory=AdaptSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    head: HeadSettings = field(default_factory=HeadSettings)
    tiles: TileSettings = field(default_factory=TileSettings)
    spatial: SpatialSettings = field(default_factory=SpatialSettings)
    selftrain: SelfTrainingSettings = field(default_factory=SelfTrainingSettings)
    modalities: Tuple[str, ...] = ("prgb", "pca", "sar")
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PipelineSettings":
        return _from_dict(cls, data)


def _from_dict(cls, data):
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            value = _from_dict(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)

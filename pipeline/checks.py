"""The rules of every setting: its type and range (a pydantic model, strict: an integer
refuses 2.5 and True), then the consistency of the settings together (samples, features and
the deploy target, iterations, evaluation, weights, search). Each broken rule is one line
naming the setting, its value and an example of a good one.

The model builder (network.model) checks its arguments with the same rules
(check_model_settings): one definition of them.
"""

from __future__ import annotations

import difflib
import math
import pprint
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from cmssw.classifiers import LWTNN_INPUTS, deploy_target_mismatch, quality_cut_steps, step_name
from cmssw.ntuple import ALGORITHMS, DNN_ITERATIONS, LABEL_BRANCHES
from gpusetter import CLUSTERS
from network.choices import ACTIVATIONS, INITIALIZERS, TRANSFORMS
from pipeline.search_space import check_search_settings
from pipeline.settings import SettingsError, default_config, describe_config
from synthetic.tables import PROCESS_NAMES

# Names of the DataFrame's own columns: a feature or extra branch may not take them.
RESERVED_COLUMNS = ("trk_isTrue", "event_index", "sample", "weight")


# ---------------------------------------------------------------------------------------------
# Checks: types and ranges (pydantic), then consistency
# ---------------------------------------------------------------------------------------------
def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


List = Annotated[list, BeforeValidator(_as_list)]
Names = Annotated[list[str], BeforeValidator(_as_list)]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Cuts = Annotated[list[Annotated[float, Field(ge=-1.0, le=1.0)]], BeforeValidator(_as_list),
                 Field(min_length=3, max_length=3)]  # fmt: skip
SplitFractions = Annotated[
    list[Annotated[float, Field(gt=0.0, lt=1.0)]],
    BeforeValidator(_as_list),
    Field(min_length=3, max_length=3),
]
Synthetic = Annotated[tuple[str, Positive, NonNegative, str], BeforeValidator(_as_tuple)]


class _ModelSchema(BaseModel):
    """The settings of the model's shape (also network.model's arguments)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    algo_depth: Positive
    hidden_layers: Annotated[list[Positive], BeforeValidator(_as_list), Field(min_length=1)]
    activation: Literal[ACTIVATIONS]  # type: ignore[valid-type]
    batch_norm: bool
    dropout: Fraction
    l2: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    initializer: Literal[INITIALIZERS]  # type: ignore[valid-type]


def check_model_settings(settings: dict[str, Any]) -> None:
    """Raise ValueError naming the first model setting out of its rules (network.model)."""
    try:
        _ModelSchema(**settings)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0])
        problem = _problem_text(first, default_config().get(name))
        raise ValueError(f"`{name}` = {settings.get(name)!r} {problem}") from None


class _Schema(_ModelSchema):
    """Type and range of every setting; strict: an int refuses 2.5 and True."""

    samples: dict[str, str | Names] = Field(min_length=1)
    train_samples: Names = Field(min_length=1)
    test_samples: Names
    tree_path: str = Field(min_length=1)
    skip_bad_files: bool
    synthetic_samples: dict[str, Synthetic]
    max_workers: Positive
    cache: bool
    cache_dir: str = Field(min_length=1)
    features: Names = Field(min_length=1)
    algo_branch: str = Field(min_length=1)
    deploy_target: Literal["tf_graph", "lwtnn", "custom"]
    lwtnn_scale_quantile: Annotated[float, Field(gt=0.0, lt=0.5)]
    label: Literal["auto", "trk_isTrue", "trk_simTrkIdx"]
    extra_branches: Names
    feature_transforms: dict[str, Literal[tuple(TRANSFORMS)]]  # type: ignore[valid-type]
    sanitizer_quantile: Annotated[float, Field(ge=0.0, lt=0.5)]
    sanitizer_fit_tracks: Positive
    iterations: Names = Field(min_length=1)
    balance_iterations: bool
    balance_true_fake: bool
    max_tracks_per_iteration: NonNegative
    split_fractions: SplitFractions
    batch_size: Positive
    epochs: Positive
    learning_rate: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    lr_schedule: Literal["constant", "cosine", "plateau"]
    early_stopping_patience: NonNegative
    checkpoint_every: NonNegative
    seed: NonNegative
    deterministic: bool
    sample_weights: dict[str, Annotated[float, Field(gt=0.0, allow_inf_nan=False)]]
    track_weight: str
    monitor_every: NonNegative
    monitor_samples: Names
    gpus: Annotated[int, Field(ge=-1)]
    min_free_gpu_memory_mb: Annotated[float, Field(ge=0.0)]
    logical_devices_per_gpu: Positive
    gpu_memory_growth: bool
    cpu_replicas: Positive
    cluster: Literal[CLUSTERS]  # type: ignore[valid-type]
    freeze_check_tracks: Positive
    freeze_tolerance: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    compare_graphs: dict[str, str]
    working_points_block: Literal["default", "trackdnn_CKF"]
    reference_cuts: dict[str, Cuts]
    reference_cuts_trackdnn_CKF: dict[str, Cuts]
    confidence_level: Annotated[float, Field(ge=0.5, lt=1.0)]
    bootstrap_samples: Annotated[int, Field(ge=20)]
    target_efficiencies: Annotated[list[Annotated[float, Field(gt=0.0, le=1.0)]],
                                   BeforeValidator(_as_list)]  # fmt: skip
    train_bdt: bool
    search_trials: Positive
    search_epochs: Positive
    search_space: dict[str, list | tuple]  # each entry checked by _check_search
    search_storage: str
    search_name: str
    results_dir: str = Field(min_length=1)
    run_name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")


def check_settings(cfg: dict[str, Any], origins: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings, checked: raises SettingsError on the first bad one."""
    origins = origins or {}
    defaults = default_config()
    try:
        _Schema(**cfg)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0])
        if first["type"] == "extra_forbidden":
            raise SettingsError(f"unknown setting '{name}'") from None
        raise SettingsError(_type_message(name, cfg, first, origins, defaults)) from None
    _inputs_of_the_target(cfg, origins, defaults)
    for check in (
        _check_samples,
        _check_features,
        _check_deploy_target,
        _check_iterations,
        _check_evaluation,
        _check_weights,
        _check_search,
    ):
        problem = check(cfg)
        if problem is not None:
            name, text, example = problem
            raise SettingsError(_message(name, cfg[name], text, example, origins))
    return cfg


def _type_message(name: str, cfg: dict, error: dict, origins: dict, defaults: dict) -> str:
    problem = _problem_text(error, defaults.get(name))
    return _message(name, cfg[name], problem, defaults.get(name), origins, example_is_value=True)


def _problem_text(error: dict, default: Any) -> str:
    """What pydantic's error says is wrong with a value, in the words of the messages."""
    kind = error["type"]
    where = "".join(f"[{part!r}]" for part in error["loc"][1:])
    context = error.get("ctx") or {}
    if kind.endswith("_type") or kind in ("bool_parsing", "int_from_float"):
        problem = f"should be of type {type(default).__name__}"
        if where:
            problem = f"has a value of the wrong type at {where}"
    elif kind == "literal_error":
        problem = f"should be one of {context.get('expected')}"
    elif kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
                "less_than_equal": "<="}[kind]  # fmt: skip
        bound = next(iter(context.values()))
        problem = f"should be {sign} {bound}" + (f" (at {where})" if where else "")
    elif kind == "too_short" and context.get("min_length") == 1:
        problem = "should not be empty"
    elif kind in ("too_short", "too_long"):
        problem = f"should have {context.get('min_length', context.get('max_length'))} values"
        if where:
            problem += f" at {where}"
    elif kind == "string_pattern_mismatch":
        problem = "should hold only letters, digits and _ . + -"
    elif kind == "finite_number":
        problem = "should be a finite number"
    else:
        problem = error["msg"][:1].lower() + error["msg"][1:] + (f" (at {where})" if where else "")
    return problem


def _message(
    name: str,
    value: Any,
    problem: str,
    example: Any,
    origins: dict[str, str],
    example_is_value: bool = False,
) -> str:
    origin = origins.get(name, "config.py")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if example_is_value:
        literal = pprint.pformat(example, width=10_000, sort_dicts=False)
        if len(literal) > 80:
            literal = literal[:77] + "..."
        example = (
            f"--{name} {_shell_quote(literal)}"
            if origin == "the command line"
            else f"{name} = {literal}"
        )
    return f"{origin}: setting '{name}' = {shown} {problem}; e.g. {example}"


def _shell_quote(literal: str) -> str:
    if literal[:1] in "'\"" and literal[1:-1].isidentifier():
        return literal[1:-1]  # a plain word needs no quotes on the command line
    return f'"{literal}"' if any(c in literal for c in " [{(\"'") else literal


Problem = tuple[str, str, str] | None  # (setting, what is wrong, an example of a good value)


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_samples(cfg: dict[str, Any]) -> Problem:
    samples = cfg["samples"]
    for key in ("train_samples", "test_samples", "monitor_samples"):
        for name in cfg[key]:
            if name not in samples:
                return (key, f"names {name!r}, which is not in `samples`{_suggest(name, samples)}",
                        f"add '{name}': 'path/to/files/' to samples")  # fmt: skip
        if len(set(cfg[key])) != len(cfg[key]):
            return key, "names a sample twice", f"{key} = {list(dict.fromkeys(cfg[key]))}"
    both = sorted(set(cfg["train_samples"]) & set(cfg["test_samples"]))
    if both:
        return ("test_samples", f"also trains on {both}: a test sample must be held out whole",
                "a sample of its own, e.g. test_samples = ['qcd_test']")  # fmt: skip
    loaded = set(cfg["train_samples"]) | set(cfg["test_samples"])
    for name in cfg["monitor_samples"]:
        if name not in loaded:
            return ("monitor_samples", f"names {name!r}, which is neither trained nor tested on",
                    "one of test_samples")  # fmt: skip
    for name, (process, _, _, label) in cfg["synthetic_samples"].items():
        if name not in samples:
            return ("synthetic_samples", f"names {name!r}, which is not in `samples`",
                    f"add '{name}': 'data/synthetic/{name}' to samples")  # fmt: skip
        if not isinstance(samples[name], str):
            return ("synthetic_samples", f"names {name!r}, whose `samples` entry is not one folder",
                    f"samples['{name}'] = 'data/synthetic/{name}'")  # fmt: skip
        if process not in PROCESS_NAMES:
            return ("synthetic_samples", f"sample {name!r}: unknown process {process!r}"
                    f"{_suggest(process, PROCESS_NAMES)}",
                    f"one of {PROCESS_NAMES}")  # fmt: skip
        if label not in LABEL_BRANCHES:
            return ("synthetic_samples", f"sample {name!r}: label {label!r} is none of "
                    f"{LABEL_BRANCHES}", f"('{process}', 1000, 1, 'trk_isTrue')")  # fmt: skip
    return None


def _check_features(cfg: dict[str, Any]) -> Problem:
    features = cfg["features"]
    repeated = sorted({f for f in features if features.count(f) > 1})
    if repeated:
        return "features", f"lists {repeated} more than once", "each feature once"
    for key in ("features", "extra_branches"):
        taken = [f for f in cfg[key] if f in RESERVED_COLUMNS or f == cfg["algo_branch"]]
        if taken:
            return (key, f"lists {taken}, which are columns of their own (label, event, sample, "
                    "algo branch)", f"remove {taken[0]!r}")  # fmt: skip
    for name in cfg["feature_transforms"]:
        if name not in features:
            return ("feature_transforms", f"names {name!r}, which is not a feature"
                    f"{_suggest(name, features)}", "names from `features` only")  # fmt: skip
    return None


def _inputs_of_the_target(cfg: dict[str, Any], origins: dict, defaults: dict) -> None:
    """For deploy_target = "lwtnn", the default features (TrackTfClassifier's) and transforms
    mean TrackLwtnnClassifier's inputs, with no transform (lwtnn scales linearly only). The
    default transforms apply to the features that are there."""
    default_transforms = cfg["feature_transforms"] == defaults["feature_transforms"]
    if cfg["deploy_target"] == "lwtnn" and cfg["features"] == defaults["features"]:
        cfg["features"] = list(LWTNN_INPUTS)
    if default_transforms:
        kept = {k: v for k, v in cfg["feature_transforms"].items() if k in cfg["features"]}
        cfg["feature_transforms"] = {} if cfg["deploy_target"] == "lwtnn" else kept


def _check_deploy_target(cfg: dict[str, Any]) -> Problem:
    problem = deploy_target_mismatch(cfg["deploy_target"], cfg["features"], cfg["algo_branch"])
    if problem is not None:
        name = "algo_branch" if problem.startswith("algo_branch") else "features"
        return name, f"does not fit deploy_target = {cfg['deploy_target']!r}: {problem}", (
            "deploy_target = 'custom' for other inputs")  # fmt: skip
    if cfg["deploy_target"] == "lwtnn" and cfg["feature_transforms"]:
        return ("feature_transforms", "is not empty, but lwtnn applies no transform (only "
                "(x + offset) * scale)", "feature_transforms = {}")  # fmt: skip
    return None


def _check_weights(cfg: dict[str, Any]) -> Problem:
    for name in cfg["sample_weights"]:
        if name not in cfg["train_samples"]:
            return ("sample_weights", f"names {name!r}, which is not a training sample"
                    f"{_suggest(name, cfg['train_samples'])}", "{'displaced': 2.0}")  # fmt: skip
    if cfg["track_weight"]:
        from tracks.weights import ExpressionError, branches_of

        try:
            branches_of(cfg["track_weight"])
        except ExpressionError as error:
            return "track_weight", str(error), "'log1p(clip(trk_pt, 0, 50))'"
    return None


def _check_iterations(cfg: dict[str, Any]) -> Problem:
    iterations = cfg["iterations"]
    known = [name for name in ALGORITHMS if name != "algoSize"]
    for name in iterations:
        if name not in known:
            return ("iterations", f"names {name!r}, which is no iteration{_suggest(name, known)}",
                    "'initialStep'")  # fmt: skip
    if len(set(iterations)) != len(iterations):
        return "iterations", "names an iteration twice", "each iteration once"
    highest = max(ALGORITHMS[name] for name in iterations)
    if cfg["algo_depth"] <= highest:
        return ("algo_depth", f"is too small for {ALGORITHMS and iterations} (value {highest})",
                f"algo_depth = {ALGORITHMS['algoSize']}")  # fmt: skip
    if not math.isclose(sum(cfg["split_fractions"]), 1.0, abs_tol=1e-6):
        return ("split_fractions", "should sum to 1 (train, validation, test)",
                "split_fractions = [0.8, 0.1, 0.1]")  # fmt: skip
    return None


def _check_evaluation(cfg: dict[str, Any]) -> Problem:
    targets = cfg["target_efficiencies"]
    if targets and (len(targets) != 3 or sorted(targets, reverse=True) != list(targets)):
        return ("target_efficiencies", "should be [] or 3 efficiencies [loose, tight, highPurity] "
                "from high to low", "[0.99, 0.97, 0.93]")  # fmt: skip
    steps = {step_name(name) for name in ALGORITHMS if name != "algoSize"}
    in_file = quality_cut_steps(DNN_ITERATIONS, cfg["iterations"])
    for setting in ("reference_cuts", "reference_cuts_trackdnn_CKF"):
        for step, cuts in cfg[setting].items():
            if step not in steps:
                return (setting, f"names {step!r}, which is no CMSSW step name"
                        f"{_suggest(step_name(step), steps)}", "'InitialStep'")  # fmt: skip
            if step not in in_file:
                return (setting, f"names {step!r}, a step dnnQualityCuts.py does not hold "
                        "(not the DNN's, not in iterations): leave it out",
                        "'InitialStep'")  # fmt: skip
            if sorted(cuts) != list(cuts):
                return (setting, f"{step}: cuts {cuts} should ascend (loose <= tight <= "
                        "highPurity)", "[-0.35, 0.1, 0.28]")  # fmt: skip
        missing = [step_name(i) for i in DNN_ITERATIONS if step_name(i) not in cfg[setting]]
        if missing:
            return (setting, f"lacks the steps {missing}: the release's file has all "
                    f"{len(DNN_ITERATIONS)}", "the release's values, as in config.py")  # fmt: skip
    taken = {"new_dnn", "trk_mva", "bdt"} & set(cfg["compare_graphs"])
    if taken:
        return ("compare_graphs", f"uses the name {sorted(taken)[0]!r}, which the evaluation "
                "gives its own classifiers", "{'CKF_2022': 'path/to/graph.pb'}")  # fmt: skip
    return None


def _check_search(cfg: dict[str, Any]) -> Problem:
    """The search settings: a space of searchable settings, each value one the setting takes."""
    described = describe_config()
    sections = {name: setting.section for name, setting in described.items()}
    defaults = {name: setting.default for name, setting in described.items()}

    def problem_of(name: str, value: Any) -> str | None:
        try:
            _Schema(**{**cfg, name: value})
        except ValidationError as error:
            return _problem_text(error.errors()[0], defaults[name])
        return None

    return check_search_settings(cfg, sections, defaults, problem_of)

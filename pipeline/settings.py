"""The settings of a run: config.py, then a run's or the user's settings file, then the command
line; every one checked (type, range, consistency) before any file is read or TensorFlow is
imported.

    cfg, args = load_config(["--epochs", "3"])

A bad setting raises SettingsError, whose message is one line naming where the value came
from, the setting, the value and an example of a good one; main.py prints it and exits with
status 2. config.py is the one list of settings: its values are the defaults, its comments the
help (`python main.py --help`), its section titles the settings' roles (pipeline.runs uses them
to decide what a later stage of a finished run may change).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import math
import pprint
import sys
import tokenize
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from cmssw.classifiers import LWTNN_INPUTS, deploy_target_mismatch, step_name
from cmssw.ntuple import ALGORITHMS, DNN_ITERATIONS, LABEL_BRANCHES
from pipeline.files import write_new_file
from pipeline.search_space import check_search_settings

CONFIG_FILE = Path(__file__).resolve().parents[1] / "config.py"
STAGES = ("all", "load", "balance", "train", "freeze", "evaluate")
# Names of the DataFrame's own columns: a feature or extra branch may not take them.
RESERVED_COLUMNS = ("trk_isTrue", "event_index", "sample", "weight")

# Choices that the model builder accepts; listed here so that they are checked without Keras.
ACTIVATIONS = (
    "elu", "relu", "selu", "gelu", "silu", "swish", "tanh", "sigmoid", "softplus", "softsign",
    "leaky_relu", "relu6", "mish", "linear", "exponential", "hard_sigmoid", "hard_silu",
)  # fmt: skip
INITIALIZERS = (
    "he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal",
    "lecun_uniform", "orthogonal", "random_normal", "random_uniform", "truncated_normal",
    "variance_scaling",
)  # fmt: skip
TRANSFORMS = ("none", "abs", "log1p", "abs_log1p", "signed_log1p", "log", "abs_log")
SYNTHETIC_PROCESSES = ("qcd", "ttbar", "displaced", "zee")


class SettingsError(SystemExit):
    """A bad setting: the message names it, its value and where it came from, and the fix.

    A SystemExit, so that a script calling load_config stops with the message alone.
    """

    exit_status = 2

    def __str__(self) -> str:
        return str(self.code)


@dataclass(frozen=True)
class Setting:
    """A setting of config.py: its default value, the comment above or beside it, its section."""

    name: str
    default: Any
    comment: str
    section: str


# ---------------------------------------------------------------------------------------------
# config.py: values, comments, sections
# ---------------------------------------------------------------------------------------------
def describe_config(path: Path = CONFIG_FILE) -> dict[str, Setting]:
    """Every setting of config.py with its comment and section, in the file's order."""
    source = Path(path).read_text()
    values = _settings_of(_execute(source, str(path)))
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    rules = {n for n, text in comments.items() if text and set(text) <= {"-"}}
    titles = {n: comments[n] for n in comments if n - 1 in rules and n + 1 in rules}
    settings: dict[str, Setting] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        above = []
        number = node.lineno - 1
        while lines[number - 1].lstrip().startswith("#") and number not in rules:
            above.insert(0, comments.get(number, ""))
            number -= 1
        beside = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        title = next((titles[n] for n in sorted(titles, reverse=True) if n < node.lineno), "")
        section = title.split(":")[0].split("(")[0].strip()
        for target in targets:
            if isinstance(target, ast.Name) and target.id in values:
                text = " ".join(above + beside)
                settings[target.id] = Setting(target.id, values[target.id], text, section)
    return settings


def _execute(source: str, filename: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)  # a settings file is trusted code
    namespace.pop("__builtins__", None)
    return namespace


def _settings_of(namespace: dict[str, Any]) -> dict[str, Any]:
    """The settings of a settings file: its lower-case names (upper-case ones are the facts it
    imports, e.g. TF_GRAPH_FEATURES)."""
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and not name.isupper()
        and not callable(value)
        and not isinstance(value, types.ModuleType)
    }


def default_config() -> dict[str, Any]:
    """The values of config.py."""
    return {name: setting.default for name, setting in describe_config().items()}


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line with a suggestion instead of the usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SettingsError(f"the command line: {message}. See python main.py --help.")


def _parser(settings: dict[str, Setting]) -> _Parser:
    parser = _Parser(
        prog="python main.py",
        description="Train the track classifier DNN of CMSSW: load -> balance -> train -> freeze "
        "-> evaluate. Every setting of config.py can be given as --name VALUE (a Python literal "
        "such as 3, 1e-3, True, \"[64, 32]\", \"{'a': 'x.root'}\"; a bare word is a string).",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = parser.add_argument_group("the run")
    run.add_argument("--config", type=Path, help="a Python file of settings over config.py")
    run.add_argument("--stage", default="all", choices=STAGES, help="run only this stage")
    run.add_argument("--run", type=Path, help="an existing run folder: freeze or evaluate it, or "
                     "retrain from its settings into a new run folder")  # fmt: skip
    run.add_argument("--resume", type=Path, metavar="RUN",
                     help="continue an interrupted run (training from its last saved state, "
                     "then the stages it has not finished)")  # fmt: skip
    run.add_argument("--search", action="store_true",
                     help="a hyperparameter search over search_space (section Search) instead "
                     "of one training; continue one with --resume")  # fmt: skip
    run.add_argument("--record", action="store_true",
                     help="with --stage load or balance: keep a run folder of it")  # fmt: skip
    run.add_argument("--debug", action="store_true", help="show tracebacks in the terminal")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in settings.values():
        group = groups.get(setting.section)
        if group is None:
            group = groups[setting.section] = parser.add_argument_group(
                f"settings: {setting.section or 'other'} (config.py)"
            )
        default = pprint.pformat(setting.default, width=10_000, sort_dicts=False)
        if len(default) > 120:
            default = default[:117] + "..."
        help_text = f"{setting.comment} [default: {default}]" if setting.comment else default
        group.add_argument(
            f"--{setting.name}", type=_literal, default=None, help=help_text.replace("%", "%%"),
            metavar=type(setting.default).__name__.upper(),
        )  # fmt: skip
    return parser


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # a bare word such as --run_name test or --lr_schedule plateau


def load_config(argv: list[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Parse the command line into (checked settings, pipeline arguments).

    The base is config.py; over it the run's config.py (with --run or --resume), then the file
    of --config, then the command line. `args.origins` says where each setting came from.
    """
    described = describe_config()
    defaults = {name: s.default for name, s in described.items()}
    parser = _parser(described)
    args, unknown = parser.parse_known_args(_joined_negative_numbers(argv, described))
    if unknown:
        raise SettingsError(_unknown_option(unknown[0], parser))
    cfg = dict(defaults)
    origins = dict.fromkeys(defaults, "config.py")
    run = args.resume or args.run
    sources = []
    if run is not None and (Path(run) / "config.py").is_file():
        sources.append(Path(run) / "config.py")
    if args.config is not None:
        if not args.config.is_file():
            raise SettingsError(
                f"--config {args.config}: no such file. Give the path of a Python file of "
                "settings, e.g. --config my_config.py."
            )
        sources.append(args.config)
    for path in sources:
        for name, value in read_config_file(path, defaults).items():
            cfg[name], origins[name] = value, str(path)
    for name in defaults:
        value = getattr(args, name)
        if value is not None:
            cfg[name], origins[name] = value, "the command line"
    args.origins = origins
    args.overrides = {n for n, o in origins.items() if o not in ("config.py", _run_file(run))}
    return check_settings(cfg, origins), args


def _joined_negative_numbers(argv: list[str] | None, settings: dict) -> list[str]:
    """`--learning_rate -1e-3` as `--learning_rate=-1e-3`: argparse would take -1e-3 for an
    option (it knows only plain negative numbers) instead of reporting the bad value."""
    if argv is None:
        argv = sys.argv[1:]
    joined: list[str] = []
    for token in argv:
        previous = joined[-1] if joined else ""
        if previous.startswith("--") and previous[2:] in settings and token.startswith("-"):
            try:
                float(token)
            except ValueError:
                joined.append(token)
            else:
                joined[-1] = f"{previous}={token}"
            continue
        joined.append(token)
    return joined


def _run_file(run: Path | None) -> str | None:
    return None if run is None else str(Path(run) / "config.py")


def _unknown_option(option: str, parser: argparse.ArgumentParser) -> str:
    name = option.split("=")[0]
    if not name.startswith("-"):
        return f"the command line: unexpected value {option!r}; settings are given as --name VALUE."
    known = [o for action in parser._actions for o in action.option_strings]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else " See python main.py --help."
    return f"the command line: unknown setting '{name.lstrip('-')}'.{hint}"


def read_config_file(path: Path, defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings a Python settings file defines; an unknown name is refused."""
    settings = _settings_of(_execute(Path(path).read_text(), str(path)))
    for name in settings:
        if name not in defaults:
            close = difflib.get_close_matches(name, defaults, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise SettingsError(
                f"{path}: unknown setting '{name}'.{hint} Settings are those of config.py."
            )
    return settings


def settings_text(cfg: dict[str, Any], header: str = "") -> str:
    """The settings as the text of a file that --config reads back."""
    doc = header or "Effective settings of this run: python main.py --config <this file>."
    lines = [f'"""{doc}"""', ""]
    lines += [
        f"{name} = {pprint.pformat(value, width=100, sort_dicts=False)}"
        for name, value in cfg.items()
    ]
    return "\n".join(lines) + "\n"


def write_config(cfg: dict[str, Any], path: Path, header: str = "") -> None:
    """Write the settings as a file that --config reads back, never over an existing one."""
    write_new_file(path, settings_text(cfg, header))


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


class _Schema(BaseModel):
    """Type and range of every setting; strict: an int refuses 2.5 and True."""

    model_config = ConfigDict(strict=True, extra="forbid")

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
    feature_transforms: dict[str, Literal[TRANSFORMS]]  # type: ignore[valid-type]
    sanitizer_quantile: Annotated[float, Field(ge=0.0, lt=0.5)]
    sanitizer_fit_tracks: Positive
    algo_depth: Positive
    iterations: Names = Field(min_length=1)
    balance_iterations: bool
    balance_true_fake: bool
    max_tracks_per_iteration: NonNegative
    split_fractions: SplitFractions
    hidden_layers: Annotated[list[Positive], BeforeValidator(_as_list), Field(min_length=1)]
    activation: Literal[ACTIVATIONS]  # type: ignore[valid-type]
    batch_norm: bool
    dropout: Fraction
    l2: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    initializer: Literal[INITIALIZERS]  # type: ignore[valid-type]
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
    cluster: Literal["auto", "slurm", "none"]
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
        if process not in SYNTHETIC_PROCESSES:
            return ("synthetic_samples", f"sample {name!r}: unknown process {process!r}"
                    f"{_suggest(process, SYNTHETIC_PROCESSES)}",
                    f"one of {SYNTHETIC_PROCESSES}")  # fmt: skip
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
    for setting in ("reference_cuts", "reference_cuts_trackdnn_CKF"):
        for step, cuts in cfg[setting].items():
            if step not in steps:
                return (setting, f"names {step!r}, which is no CMSSW step name"
                        f"{_suggest(step_name(step), steps)}", "'InitialStep'")  # fmt: skip
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

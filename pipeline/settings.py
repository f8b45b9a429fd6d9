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
import pprint
import sys
import tokenize
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files import write_new_file

CONFIG_FILE = Path(__file__).resolve().parents[1] / "config.py"
STAGES = ("all", "load", "balance", "train", "freeze", "evaluate")


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
    from pipeline.checks import check_settings  # the rules of every setting

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

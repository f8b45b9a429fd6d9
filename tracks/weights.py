"""Per-track importance weights for the training: a weight per training sample and an optional
expression over the tracks' branches, normalised to mean 1 within each iteration.

    track_weight = "log1p(clip(trk_pt, 0, 50))"      # the older framework's choice

The expression is Python syntax restricted to numbers, branch names, + - * / **, comparisons
and the functions of FUNCTIONS (NumPy's); it is checked when the settings are read (an unknown
name or function is refused before anything is loaded) and evaluated with NumPy on the
DataFrame's columns, never with eval.
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cmssw.ntuple import TRACK_BRANCHES

WEIGHT = "weight"  # the column the weights are kept in
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs,
    "clip": np.clip,
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "sqrt": np.sqrt,
    "tanh": np.tanh,
    "minimum": np.minimum,
    "maximum": np.maximum,
    "where": np.where,
}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class ExpressionError(ValueError):
    """A track_weight expression that cannot be evaluated: says which part and why."""


def branches_of(expression: str) -> list[str]:
    """The branches an expression reads, in order; raises ExpressionError on anything else
    than numbers, branch names, arithmetic, comparisons and the functions of FUNCTIONS."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"is not an expression ({error.msg})") from None
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                called = ast.unparse(node.func)
                raise ExpressionError(f"calls {called!r}, not one of {sorted(FUNCTIONS)}")
            if node.keywords:
                raise ExpressionError(f"{node.func.id}(): give its arguments by position")
        elif isinstance(node, ast.Name):
            if node.id in FUNCTIONS:
                continue
            if node.id not in TRACK_BRANCHES:
                close = difflib.get_close_matches(node.id, list(TRACK_BRANCHES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ExpressionError(f"names {node.id!r}, which is no track branch{hint}")
            names.append(node.id)
        elif not isinstance(node, _ALLOWED):
            raise ExpressionError(f"uses {type(node).__name__}, which is not allowed here")
    return list(dict.fromkeys(names))


_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Constant, ast.Load,
    *_BINARY, *_UNARY, *_COMPARE,
)  # fmt: skip


def evaluate(expression: str, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The expression's value per track, float64, from the columns (branch -> values)."""
    branches_of(expression)  # refuses anything unsafe first

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float) or isinstance(node.value, bool):
                raise ExpressionError(f"uses the constant {node.value!r}; only numbers are allowed")
            return node.value
        if isinstance(node, ast.Name):
            return np.asarray(columns[node.id], dtype=np.float64)
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](value(node.operand))
        if isinstance(node, ast.Compare):
            left, result = value(node.left), True
            for op, right in zip(node.ops, node.comparators, strict=True):
                right = value(right)
                result = result & _COMPARE[type(op)](left, right)
                left = right
            return result
        assert isinstance(node, ast.Call)  # checked by branches_of
        return FUNCTIONS[node.func.id](*[value(argument) for argument in node.args])

    with np.errstate(all="ignore"):
        return np.asarray(value(ast.parse(expression, mode="eval")), dtype=np.float64)


def training_weights(
    df: pd.DataFrame,
    sample_weights: Mapping[str, float],
    expression: str,
    algo_column: str,
    iterations: Sequence[int],
) -> np.ndarray:
    """float32 weight per track: its sample's weight (1 when not listed) times the expression
    (1 when empty), normalised to mean 1 within each iteration.

    Raises ValueError naming the expression when it gives a negative or non-finite weight, or
    an iteration whose weights sum to 0."""
    weights = np.ones(len(df), dtype=np.float64)
    if sample_weights:
        names = df["sample"].astype(str).to_numpy()
        for sample, factor in sample_weights.items():
            weights[names == sample] *= factor
    if expression:
        columns = {name: df[name].to_numpy() for name in branches_of(expression)}
        per_track = evaluate(expression, columns) * np.ones(len(df))
        bad = ~np.isfinite(per_track) | (per_track < 0)
        if bad.any():
            raise ValueError(
                f"track_weight = {expression!r} gives {int(bad.sum())} tracks a negative or "
                "non-finite weight: keep it finite and >= 0 (e.g. with clip)"
            )
        weights *= per_track
    algo = df[algo_column].to_numpy()
    for value in iterations:
        rows = algo == value
        if rows.any():
            total = weights[rows].sum()
            if total <= 0:
                raise ValueError(f"the weights of the iteration with algo {value} sum to 0")
            weights[rows] *= rows.sum() / total
    return weights.astype(np.float32)


def split_weights(train: pd.DataFrame, validation: pd.DataFrame) -> np.ndarray | None:
    """The weights train_model takes: the training then the validation tracks' WEIGHT column,
    or None when the splits have none (no weights set)."""
    if WEIGHT not in train:
        return None
    return np.concatenate([train[WEIGHT].to_numpy(), validation[WEIGHT].to_numpy()])

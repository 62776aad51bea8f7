"""Command-line options made from config dataclasses, so each is declared once.

A field's name gives its flag (`max_new_tokens` -> `--max-new-tokens`), its type the
argument's type (a `Literal` its choices), its default the default, and the docstring
under it the help. `option(...)` puts what the field alone cannot say on the field
itself: another flag name, a metavar, or `hidden` for fields the command line leaves out.

>>> import argparse
>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     steps: int = 3
...     '''How many steps to take.'''
>>> p = argparse.ArgumentParser()
>>> add_options(p, Demo)
>>> from_args(Demo, p.parse_args(["--steps", "5"]))
Demo(steps=5)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    flag: str | None = None,
    metavar: str | None = None,
    choices: typing.Sequence[str] | None = None,
    hidden: bool = False,
) -> Any:
    """A dataclass field with command-line settings its type and name cannot give.

    `flag` names the option (for a bool that defaults to True, the flag that turns it
    off, e.g. `--all-paths` for `leaves_only`); `hidden` keeps it off the command line.
    """
    cli = {"flag": flag, "metavar": metavar, "choices": choices, "hidden": hidden}
    metadata = {"cli": {k: v for k, v in cli.items() if v}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and its bases), whitespace folded."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (a frozen app): no help text
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, body[1:], strict=False):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _unwrap(hint: Any) -> tuple[Any, tuple[str, ...] | None]:
    """(the type to parse, its choices) of an annotation: Optional and Literal undone."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    if typing.get_origin(hint) is typing.Literal:
        values = typing.get_args(hint)
        return type(values[0]), tuple(values)
    return hint, None


def add_options(
    parser: Any,
    cls: type,
    *,
    skip: typing.Container[str] = (),
    override: bool = False,
) -> None:
    """Adds to `parser` (or an argument group) an option for each field of dataclass `cls`
    but those in `skip`.

    With `override`, every option defaults to None, meaning "not given": the values
    given then override another source of settings (a decoding preset, say), and a bool
    gets both `--flag` and `--no-flag`.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        cli = f.metadata.get("cli", {})
        if f.name in skip or cli.get("hidden"):
            continue
        kind, choices = _unwrap(hints[f.name])
        default = _default(f)
        help_text = docs.get(f.name, "").replace("%", "%%")
        kw: dict[str, Any] = {"dest": f.name}
        flag = cli.get("flag") or "--" + f.name.replace("_", "-")
        if kind is bool:
            if override:
                kw.update(action=argparse.BooleanOptionalAction, default=None)
            elif default:
                if not cli.get("flag"):
                    raise TypeError(f"{cls.__name__}.{f.name}: a True default needs a flag")
                kw.update(action="store_false")
            else:
                kw.update(action="store_true")
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            kw.update(action="append", type=item, default=None)
            help_text += " (repeatable)"
        else:
            kw.update(type=kind, default=None if override else default)
            if choices or cli.get("choices"):
                kw["choices"] = list(cli.get("choices") or choices)
            if not override and default is not None:
                help_text += f" (default: {default})"
        if kind is not bool and "choices" not in kw:  # named after the flag, not the field
            kw["metavar"] = cli.get("metavar") or flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, help=help_text.strip() or None, **kw)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` that `args` holds a value for (None counts as not given)."""
    names = (f.name for f in dataclasses.fields(cls))
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def from_args(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """An instance of `cls` from parsed options (fields not given keep their defaults)."""
    return cls(**{**given(cls, args), **values})

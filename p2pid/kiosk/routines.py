"""Kiosk routines: the named actions people paired with a kiosk may run on it.

A TOML file (see docs/kiosk-guide.md) declares them; two built-ins are always present:

    status          the kiosk's own status text            owner, guest
    show-message    shows one line of text (`text`, <=280)  owner, guest

A file may change a built-in's description and roles, not what it does. Every other routine is
a command: an argv template whose elements are literal strings or exactly `{arg}`, replaced by
the validated argument as one whole element. Nothing goes through a shell.

    [routines.screen]
    description = "Turn the screen on or off"
    command = ["/usr/bin/xset", "dpms", "force", "{state}"]
    args = [{ name = "state", kind = "choice", choices = ["on", "off"] }]
    env = { DISPLAY = ":0" }
    roles = ["owner"]
    timeout = 5

`RoutineBook` holds the routines of one kiosk; `validate_args` checks what a person sent;
`run_routine` runs one (a built-in through the mapping the kiosk passes in, a command through
`routine_runner.run_argv`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import tomllib
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import trio

from p2pid.kiosk.routine_runner import (
    DEFAULT_MAX_OUTPUT_BYTES,
    RoutineResult,
    capped_text,
    elapsed_ms,
    run_argv,
)

__all__ = [
    "BUILTIN_NAMES",
    "ArgKind",
    "ArgSpec",
    "BuiltinFunction",
    "Role",
    "Routine",
    "RoutineBook",
    "RoutineError",
    "RoutineResult",
    "run_routine",
    "validate_args",
]

log = logging.getLogger(__name__)

MAX_ROUTINES = 64
MAX_ARGS = 16
MAX_COMMAND_ELEMENTS = 64
MAX_ELEMENT_CHARS = 4096
MAX_DESCRIPTION_CHARS = 200
DEFAULT_MAX_LENGTH = 256
MAX_MAX_LENGTH = 4096
MAX_PATTERN_CHARS = 512
MAX_CHOICES = 64
MAX_INT_CHARS = 32
MAX_ENV_VARS = 32
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 300.0
MAX_FILE_BYTES = 1 << 20
SHOW_MESSAGE_MAX_CHARS = 280

ROUTINE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
ARG_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
STRICT_INT = re.compile(r"-?(0|[1-9][0-9]*)")

BuiltinFunction = Callable[[list[str]], Awaitable[str]]


class RoutineError(ValueError):
    """A bad routines file, an unknown routine or a bad argument; the message says why."""


class Role(StrEnum):
    OWNER = "owner"
    GUEST = "guest"


class ArgKind(StrEnum):
    STRING = "string"
    INT = "int"
    CHOICE = "choice"
    BOOL = "bool"


@dataclass(frozen=True)
class ArgSpec:
    """One declared argument. `max_length` and `pattern` (a full match) bound strings,
    `choices` a choice, `minimum`/`maximum` an int. Optional arguments come last."""

    name: str
    kind: ArgKind
    max_length: int = DEFAULT_MAX_LENGTH
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    optional: bool = False

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "kind": str(self.kind)}


@dataclass(frozen=True)
class Routine:
    """A built-in (`builtin` names it, `command` is None) or a command (`command` is the argv
    template, `builtin` is None). `env` adds literal variables to a command's environment."""

    name: str
    description: str
    roles: frozenset[Role]
    builtin: str | None
    command: tuple[str, ...] | None
    args: tuple[ArgSpec, ...]
    timeout_s: float
    env: tuple[tuple[str, str], ...] = field(default=())

    def allows(self, role: Role) -> bool:
        return role in self.roles

    def describe(self) -> dict[str, Any]:
        """The record a person's node receives (`pair` / `kiosks` results)."""
        return {
            "name": self.name,
            "description": self.description,
            "args": [spec.describe() for spec in self.args],
            "roles": [str(role) for role in Role if role in self.roles],
        }

    def argv(self, values: Sequence[str]) -> list[str]:
        """The command line for already validated `values`: each `{arg}` element becomes that
        argument (an optional argument not given drops its element), `{{`/`}}` become braces."""
        if self.command is None:
            raise RoutineError(f"routine {self.name!r} is a built-in, not a command")
        given = {spec.name: value for spec, value in zip(self.args, values, strict=False)}
        argv: list[str] = []
        for element in self.command:
            placeholder = _placeholder(element)
            if placeholder is None:
                argv.append(_unescape(element))
            elif placeholder in given:
                argv.append(given[placeholder])
        return argv


# Built-ins.

BUILTIN_STATUS = "status"
BUILTIN_SHOW_MESSAGE = "show-message"
BUILTIN_NAMES = (BUILTIN_STATUS, BUILTIN_SHOW_MESSAGE)
_BOTH_ROLES = frozenset({Role.OWNER, Role.GUEST})


def _builtin_routines() -> tuple[Routine, ...]:
    return (
        Routine(
            name=BUILTIN_STATUS,
            description="Show the kiosk's status",
            roles=_BOTH_ROLES,
            builtin=BUILTIN_STATUS,
            command=None,
            args=(),
            timeout_s=DEFAULT_TIMEOUT_S,
        ),
        Routine(
            name=BUILTIN_SHOW_MESSAGE,
            description="Show a message on the screen",
            roles=_BOTH_ROLES,
            builtin=BUILTIN_SHOW_MESSAGE,
            command=None,
            args=(ArgSpec("text", ArgKind.STRING, max_length=SHOW_MESSAGE_MAX_CHARS),),
            timeout_s=DEFAULT_TIMEOUT_S,
        ),
    )


# The book.


class RoutineBook:
    """The routines of one kiosk: the built-ins first, then the file's, in file order."""

    def __init__(self, routines: Iterable[Routine]) -> None:
        self._routines: dict[str, Routine] = {}
        for routine in routines:
            if routine.name in self._routines:
                raise RoutineError(f"routine {routine.name!r} is declared twice")
            self._routines[routine.name] = routine
        for name in BUILTIN_NAMES:
            if name not in self._routines:
                raise RoutineError(f"the built-in routine {name!r} is missing")

    @classmethod
    def builtins_only(cls) -> RoutineBook:
        return cls(_builtin_routines())

    @classmethod
    def load(cls, path: Path) -> RoutineBook:
        """Reads and parses a routines file; every error names the file."""
        try:
            with path.open("rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise RoutineError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        if len(data) > MAX_FILE_BYTES:
            raise RoutineError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RoutineError(f"{path}: not UTF-8 (byte {exc.start})") from exc
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, *, source: str = "<routines>") -> RoutineBook:
        """Parses the text of a routines file; errors start with `source`."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RoutineError(f"{source}: not valid TOML: {exc}") from exc
        return cls(_routines_from_document(document, source))

    @property
    def routines(self) -> tuple[Routine, ...]:
        return tuple(self._routines.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._routines)

    def __len__(self) -> int:
        return len(self._routines)

    def get(self, name: str) -> Routine:
        try:
            return self._routines[name]
        except KeyError:
            raise RoutineError(f"no routine named {_quote(name)} on this kiosk") from None

    def for_role(self, role: Role) -> list[Routine]:
        return [routine for routine in self._routines.values() if role in routine.roles]

    def describe(self, role: Role) -> list[dict[str, Any]]:
        return [routine.describe() for routine in self.for_role(role)]

    def validate(self, routine: Routine, args: Sequence[str]) -> list[str]:
        """The arguments `routine` of this book receives for `args`, in normal form."""
        if self._routines.get(routine.name) != routine:
            raise RoutineError(f"routine {_quote(routine.name)} is not one of this kiosk's")
        return validate_args(routine, args)


# Parsing a file.

_TOP_KEYS = frozenset({"routines"})
_ROUTINE_KEYS = frozenset({"description", "roles", "command", "args", "timeout", "env"})
_BUILTIN_KEYS = frozenset({"description", "roles"})
_ARG_KEYS = frozenset(
    {"name", "kind", "max_length", "pattern", "choices", "minimum", "maximum", "optional"}
)
_KIND_KEYS: Mapping[ArgKind, frozenset[str]] = {
    ArgKind.STRING: frozenset({"max_length", "pattern"}),
    ArgKind.INT: frozenset({"minimum", "maximum"}),
    ArgKind.CHOICE: frozenset({"choices"}),
    ArgKind.BOOL: frozenset(),
}


def _routines_from_document(document: dict[str, Any], source: str) -> list[Routine]:
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        raise RoutineError(
            f"{source}: unknown top-level key {_quote(unknown[0])} (routines go in [routines.NAME])"
        )
    table = document.get("routines", {})
    if not isinstance(table, dict):
        raise RoutineError(f"{source}: 'routines' must be a table of [routines.NAME] tables")
    if len(table) > MAX_ROUTINES:
        raise RoutineError(f"{source}: {len(table)} routines; at most {MAX_ROUTINES} are allowed")
    builtins = {routine.name: routine for routine in _builtin_routines()}
    parsed: dict[str, Routine] = {}
    for name, body in table.items():
        where = f"{source}: routine {_quote(name)}"
        if not ROUTINE_NAME.fullmatch(name):
            raise RoutineError(
                f"{where}: bad name (lower-case letters, digits and '-', starting with a letter,"
                " at most 32 characters)"
            )
        if not isinstance(body, dict):
            raise RoutineError(f"{where}: must be a table ([routines.{name}])")
        if name in builtins:
            parsed[name] = _builtin_override(builtins[name], body, where)
        else:
            parsed[name] = _command_routine(name, body, where)
    ordered = [parsed.pop(name, routine) for name, routine in builtins.items()]
    return ordered + list(parsed.values())


def _builtin_override(builtin: Routine, body: dict[str, Any], where: str) -> Routine:
    unknown = sorted(set(body) - _BUILTIN_KEYS)
    if unknown:
        raise RoutineError(
            f"{where}: is a built-in; only 'description' and 'roles' may be set"
            f" (not {_quote(unknown[0])})"
        )
    return Routine(
        name=builtin.name,
        description=_description(body, where, builtin.description),
        roles=_roles(body, where, builtin.roles),
        builtin=builtin.builtin,
        command=None,
        args=builtin.args,
        timeout_s=builtin.timeout_s,
    )


def _command_routine(name: str, body: dict[str, Any], where: str) -> Routine:
    unknown = sorted(set(body) - _ROUTINE_KEYS)
    if unknown:
        raise RoutineError(
            f"{where}: unknown key {_quote(unknown[0])}"
            f" (allowed: {', '.join(sorted(_ROUTINE_KEYS))})"
        )
    if "command" not in body:
        raise RoutineError(f"{where}: needs a 'command' (an argv list; the first an absolute path)")
    args = _args(body.get("args", []), where)
    command = _command(body["command"], args, where)
    return Routine(
        name=name,
        description=_description(body, where, ""),
        roles=_roles(body, where, frozenset({Role.OWNER})),
        builtin=None,
        command=command,
        args=args,
        timeout_s=_timeout(body, where),
        env=_env(body.get("env", {}), where),
    )


def _description(body: dict[str, Any], where: str, default: str) -> str:
    description = body.get("description", default)
    if not isinstance(description, str):
        raise RoutineError(f"{where}: 'description' must be a string")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise RoutineError(f"{where}: 'description' is over {MAX_DESCRIPTION_CHARS} characters")
    if _has_control(description):
        raise RoutineError(f"{where}: 'description' has control characters")
    return description


def _roles(body: dict[str, Any], where: str, default: frozenset[Role]) -> frozenset[Role]:
    if "roles" not in body:
        return default
    roles = body["roles"]
    if not isinstance(roles, list) or not roles:
        raise RoutineError(f"{where}: 'roles' must be a non-empty list of 'owner' and 'guest'")
    result: set[Role] = set()
    for role in roles:
        if not isinstance(role, str) or role not in (Role.OWNER, Role.GUEST):
            raise RoutineError(f"{where}: unknown role {_quote(role)} (owner or guest)")
        if role in result:
            raise RoutineError(f"{where}: role {_quote(role)} is listed twice")
        result.add(Role(role))
    return frozenset(result)


def _timeout(body: dict[str, Any], where: str) -> float:
    timeout = body.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise RoutineError(f"{where}: 'timeout' must be a number of seconds")
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise RoutineError(
            f"{where}: 'timeout' must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds"
        )
    return float(timeout)


def _env(env: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(env, dict):
        raise RoutineError(f"{where}: 'env' must be a table of NAME = \"value\"")
    if len(env) > MAX_ENV_VARS:
        raise RoutineError(f"{where}: 'env' has more than {MAX_ENV_VARS} variables")
    pairs: list[tuple[str, str]] = []
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise RoutineError(f"{where}: env: bad variable name {_quote(name)} (A-Z, 0-9, _)")
        if not isinstance(value, str) or "\0" in value or len(value) > MAX_ELEMENT_CHARS:
            raise RoutineError(f"{where}: env {name}: the value must be a string without NUL")
        pairs.append((name, value))
    return tuple(pairs)


def _args(raw: object, where: str) -> tuple[ArgSpec, ...]:
    if not isinstance(raw, list):
        raise RoutineError(f"{where}: 'args' must be a list of tables ([[routines.NAME.args]])")
    if len(raw) > MAX_ARGS:
        raise RoutineError(f"{where}: more than {MAX_ARGS} args")
    specs: list[ArgSpec] = []
    for index, item in enumerate(raw):
        spec = _arg(item, f"{where}: args[{index}]")
        if any(other.name == spec.name for other in specs):
            raise RoutineError(f"{where}: arg {_quote(spec.name)} is declared twice")
        if specs and specs[-1].optional and not spec.optional:
            raise RoutineError(
                f"{where}: arg {_quote(spec.name)} is required but follows an optional one"
                " (optional args come last)"
            )
        specs.append(spec)
    return tuple(specs)


def _arg(item: object, where: str) -> ArgSpec:
    if not isinstance(item, dict):
        raise RoutineError(f"{where}: must be a table with 'name' and 'kind'")
    name = item.get("name")
    if not isinstance(name, str) or not ARG_NAME.fullmatch(name):
        raise RoutineError(
            f"{where}: bad or missing 'name' {_quote(name)} (lower-case letters, digits and '_',"
            " starting with a letter, at most 32 characters)"
        )
    where = f"{where} ({name})"
    unknown = sorted(set(item) - _ARG_KEYS)
    if unknown:
        raise RoutineError(f"{where}: unknown key {_quote(unknown[0])}")
    raw_kind = item.get("kind")
    if not isinstance(raw_kind, str) or raw_kind not in set(ArgKind):
        kinds = ", ".join(kind.value for kind in ArgKind)
        raise RoutineError(f"{where}: bad or missing 'kind' {_quote(raw_kind)} ({kinds})")
    kind = ArgKind(raw_kind)
    misplaced = sorted(set(item) & (_ARG_KEYS - {"name", "kind", "optional"}) - _KIND_KEYS[kind])
    if misplaced:
        raise RoutineError(f"{where}: {_quote(misplaced[0])} does not apply to {kind} args")
    optional = item.get("optional", False)
    if not isinstance(optional, bool):
        raise RoutineError(f"{where}: 'optional' must be true or false")
    spec = ArgSpec(name=name, kind=kind, optional=optional)
    if kind is ArgKind.STRING:
        return _string_arg(spec, item, where)
    if kind is ArgKind.INT:
        return _int_arg(spec, item, where)
    if kind is ArgKind.CHOICE:
        return _choice_arg(spec, item, where)
    return spec


def _string_arg(spec: ArgSpec, item: dict[str, Any], where: str) -> ArgSpec:
    max_length = item.get("max_length", DEFAULT_MAX_LENGTH)
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise RoutineError(f"{where}: 'max_length' must be an integer")
    if not 1 <= max_length <= MAX_MAX_LENGTH:
        raise RoutineError(f"{where}: 'max_length' must be from 1 to {MAX_MAX_LENGTH}")
    pattern = item.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
            raise RoutineError(
                f"{where}: 'pattern' must be a regular expression of at most"
                f" {MAX_PATTERN_CHARS} characters"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RoutineError(
                f"{where}: 'pattern' is not a valid regular expression: {exc}"
            ) from exc
    return ArgSpec(
        name=spec.name,
        kind=spec.kind,
        max_length=max_length,
        pattern=pattern,
        optional=spec.optional,
    )


def _int_arg(spec: ArgSpec, item: dict[str, Any], where: str) -> ArgSpec:
    bounds: dict[str, int | None] = {}
    for key in ("minimum", "maximum"):
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RoutineError(f"{where}: {_quote(key)} must be an integer")
        bounds[key] = value
    minimum, maximum = bounds["minimum"], bounds["maximum"]
    if minimum is not None and maximum is not None and minimum > maximum:
        raise RoutineError(f"{where}: 'minimum' is greater than 'maximum'")
    return ArgSpec(
        name=spec.name,
        kind=spec.kind,
        minimum=minimum,
        maximum=maximum,
        optional=spec.optional,
    )


def _choice_arg(spec: ArgSpec, item: dict[str, Any], where: str) -> ArgSpec:
    choices = item.get("choices")
    if not isinstance(choices, list) or not choices:
        raise RoutineError(f"{where}: a choice arg needs a non-empty 'choices' list of strings")
    if len(choices) > MAX_CHOICES:
        raise RoutineError(f"{where}: more than {MAX_CHOICES} choices")
    for choice in choices:
        if (
            not isinstance(choice, str)
            or not choice
            or len(choice) > DEFAULT_MAX_LENGTH
            or _has_control(choice)
        ):
            raise RoutineError(
                f"{where}: choice {_quote(choice)} must be a non-empty string of at most"
                f" {DEFAULT_MAX_LENGTH} characters without control characters"
            )
    if len(set(choices)) != len(choices):
        raise RoutineError(f"{where}: 'choices' lists a value twice")
    return ArgSpec(name=spec.name, kind=spec.kind, choices=tuple(choices), optional=spec.optional)


def _command(raw: object, args: tuple[ArgSpec, ...], where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise RoutineError(f"{where}: 'command' must be a non-empty list of strings")
    if len(raw) > MAX_COMMAND_ELEMENTS:
        raise RoutineError(f"{where}: 'command' has more than {MAX_COMMAND_ELEMENTS} elements")
    declared = {spec.name for spec in args}
    used: set[str] = set()
    for index, element in enumerate(raw):
        if not isinstance(element, str):
            raise RoutineError(f"{where}: command[{index}] must be a string")
        if len(element) > MAX_ELEMENT_CHARS or "\0" in element:
            raise RoutineError(
                f"{where}: command[{index}] is over {MAX_ELEMENT_CHARS} characters or has a NUL"
            )
        placeholder = _placeholder(element)
        if placeholder is None:
            if "{" in element.replace("{{", "") or "}" in element.replace("}}", ""):
                raise RoutineError(
                    f"{where}: command[{index}] {_quote(element)}: an argument must be a whole"
                    " element, exactly {name}; write {{ and }} for literal braces"
                )
            continue
        if index == 0:
            raise RoutineError(
                f"{where}: command[0] must be a fixed absolute path, not an argument"
            )
        if placeholder not in declared:
            raise RoutineError(
                f"{where}: command[{index}] names {{{placeholder}}}, which is not a declared arg"
            )
        used.add(placeholder)
    program = _unescape(raw[0])
    if not os.path.isabs(program):
        raise RoutineError(
            f"{where}: command[0] {_quote(program)} must be an absolute path (no PATH lookup)"
        )
    unused = [spec.name for spec in args if spec.name not in used]
    if unused:
        raise RoutineError(f"{where}: arg {_quote(unused[0])} is declared but not in 'command'")
    return tuple(raw)


def _placeholder(element: str) -> str | None:
    """The argument name if `element` is exactly `{name}` (any text between single braces
    counts, so that a bad name is reported rather than taken literally)."""
    match = PLACEHOLDER.fullmatch(element)
    return match.group(1) if match else None


def _unescape(element: str) -> str:
    return element.replace("{{", "{").replace("}}", "}")


# Validating arguments.


def validate_args(routine: Routine, args: Sequence[str]) -> list[str]:
    """The arguments in normal form (ints without sign or zeros they need not have, bools as
    "true"/"false"), or RoutineError naming the argument and the rule it breaks."""
    if isinstance(args, str):
        raise RoutineError("args must be a list of strings")
    required = sum(1 for spec in routine.args if not spec.optional)
    if not required <= len(args) <= len(routine.args):
        raise RoutineError(_count_message(routine, len(args), required))
    values: list[str] = []
    for spec, value in zip(routine.args, args, strict=False):
        if not isinstance(value, str):
            raise RoutineError(f"{routine.name}: {spec.name}: must be a string")
        values.append(_check_value(routine, spec, value))
    return values


def _count_message(routine: Routine, given: int, required: int) -> str:
    usage = " ".join(
        f"[{spec.name}]" if spec.optional else f"<{spec.name}>" for spec in routine.args
    )
    if required == len(routine.args):
        expected = f"{required} argument{'s' if required != 1 else ''}"
    else:
        expected = f"{required} to {len(routine.args)} arguments"
    shown = f" ({usage})" if usage else ""
    return f"{routine.name}: takes {expected}{shown}, got {given}"


def _check_value(routine: Routine, spec: ArgSpec, value: str) -> str:
    where = f"{routine.name}: {spec.name}"
    if spec.kind is ArgKind.INT:
        text = value if len(value) <= MAX_INT_CHARS else value[:MAX_INT_CHARS] + "..."
        if len(value) > MAX_INT_CHARS or not STRICT_INT.fullmatch(value):
            raise RoutineError(f"{where}: {_quote(text)} is not an integer")
        number = int(value)
        if spec.minimum is not None and number < spec.minimum:
            raise RoutineError(f"{where}: {number} is less than {spec.minimum}")
        if spec.maximum is not None and number > spec.maximum:
            raise RoutineError(f"{where}: {number} is more than {spec.maximum}")
        return str(number)
    if spec.kind is ArgKind.BOOL:
        if value not in ("true", "false"):
            raise RoutineError(f"{where}: must be true or false")
        return value
    if spec.kind is ArgKind.CHOICE:
        if value not in spec.choices:
            raise RoutineError(f"{where}: must be one of {', '.join(spec.choices)}")
        return value
    if len(value) > spec.max_length:
        raise RoutineError(f"{where}: longer than {spec.max_length} characters")
    if _has_control(value):
        raise RoutineError(f"{where}: control characters (newlines, NUL, ...) are not allowed")
    if spec.pattern is not None:
        if not re.fullmatch(spec.pattern, value):
            raise RoutineError(f"{where}: does not match the pattern {spec.pattern}")
    elif routine.command is not None and value.startswith("-"):
        raise RoutineError(
            f"{where}: may not start with '-' (it could be read as an option);"
            " the routine's 'pattern' can allow it"
        )
    return value


def _has_control(text: str) -> bool:
    # Cc: C0/C1 controls (NUL, newline, escape, DEL...); Cs: lone surrogates, which no argv
    # or screen can carry.
    return any(unicodedata.category(char) in ("Cc", "Cs") for char in text)


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Running.


async def run_routine(
    routine: Routine,
    args: Sequence[str],
    *,
    builtins: Mapping[str, BuiltinFunction],
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> RoutineResult:
    """Validates `args` again (RoutineError if bad: nothing runs) and runs the routine. A
    built-in is awaited with the validated args; a command runs as described in
    `routine_runner`. Failures of the routine itself are results with ok False, not errors."""
    values = validate_args(routine, args)
    if routine.builtin is not None:
        function = builtins.get(routine.builtin)
        if function is None:
            raise RoutineError(f"the built-in {routine.builtin!r} is not available on this kiosk")
        return await _run_builtin(routine, function, values, max_output_bytes)
    return await run_argv(
        routine.argv(values),
        timeout_s=routine.timeout_s,
        env=dict(routine.env),
        max_output_bytes=max_output_bytes,
    )


async def _run_builtin(
    routine: Routine, function: BuiltinFunction, values: list[str], max_output_bytes: int
) -> RoutineResult:
    started = time.monotonic()
    output: str | None = None
    try:
        with trio.move_on_after(routine.timeout_s):
            output = await function(values)
    except Exception as exc:
        log.exception("built-in routine %s failed", routine.name)
        text = capped_text(f"{routine.name} failed: {exc}", max_output_bytes)
        return RoutineResult(False, None, text, elapsed_ms(started))
    if output is None:
        note = f"[timed out after {routine.timeout_s:g} s]"
        return RoutineResult(False, None, note, elapsed_ms(started))
    return RoutineResult(True, None, capped_text(output, max_output_bytes), elapsed_ms(started))

"""Kiosk routines: parsing routines files (good and bad), validating arguments, running
built-ins and real commands (no shell, bounded time and output), and filtering by role."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import pytest
import trio

from p2pid.kiosk.routine_runner import BASE_ENVIRONMENT, TRUNCATED_NOTE, run_argv
from p2pid.kiosk.routines import (
    MAX_ROUTINES,
    ArgKind,
    ArgSpec,
    BuiltinFunction,
    Role,
    Routine,
    RoutineBook,
    RoutineError,
    RoutineResult,
    run_routine,
    validate_args,
)

PYTHON = sys.executable
TEST_TIMEOUT = 20.0

EXAMPLE = """
# The routines of the living-room TV.

[routines.status]
description = "Uptime and what is on screen"

[routines.show-message]
roles = ["owner"]

[routines.screen]
description = "Turn the screen on or off"
command = ["/usr/bin/xset", "dpms", "force", "{state}"]
args = [{ name = "state", kind = "choice", choices = ["on", "off"] }]
env = { DISPLAY = ":0" }
roles = ["owner", "guest"]
timeout = 5

[routines.volume]
command = ["/usr/bin/amixer", "set", "Master", "{percent}"]
timeout = 2.5

[[routines.volume.args]]
name = "percent"
kind = "int"
minimum = 0
maximum = 100

[routines.open-page]
description = "Open a page of the family wiki"
command = ["/usr/bin/kiosk-browser", "--", "{page}", "{fullscreen}", "{{literal}}"]
args = [
  { name = "page", kind = "string", pattern = "[A-Za-z0-9_/-]+", max_length = 64 },
  { name = "fullscreen", kind = "bool", optional = true },
]
roles = ["guest"]
"""


@pytest.fixture(scope="module")
def book() -> RoutineBook:
    return RoutineBook.parse(EXAMPLE)


def python_routine(
    code: str, *args: ArgSpec, timeout_s: float = 10.0, env: dict[str, str] | None = None
) -> Routine:
    """A command routine running `python -c code {arg}...`."""
    return Routine(
        name="py",
        description="",
        roles=frozenset({Role.OWNER}),
        builtin=None,
        command=(PYTHON, "-c", code, *(f"{{{spec.name}}}" for spec in args)),
        args=args,
        timeout_s=timeout_s,
        env=tuple((env or {}).items()),
    )


async def run(routine: Routine, *args: str, max_output_bytes: int = 65536) -> RoutineResult:
    with trio.fail_after(TEST_TIMEOUT):
        return await run_routine(routine, args, builtins={}, max_output_bytes=max_output_bytes)


# Parsing.


def test_the_example_file_parses_into_builtins_then_file_order(book: RoutineBook) -> None:
    assert book.names == ("status", "show-message", "screen", "volume", "open-page")
    screen = book.get("screen")
    assert screen == Routine(
        name="screen",
        description="Turn the screen on or off",
        roles=frozenset({Role.OWNER, Role.GUEST}),
        builtin=None,
        command=("/usr/bin/xset", "dpms", "force", "{state}"),
        args=(ArgSpec("state", ArgKind.CHOICE, choices=("on", "off")),),
        timeout_s=5.0,
        env=(("DISPLAY", ":0"),),
    )
    volume = book.get("volume")
    assert volume.roles == frozenset({Role.OWNER})  # the default for a command
    assert volume.timeout_s == 2.5
    assert volume.description == ""
    assert volume.args == (ArgSpec("percent", ArgKind.INT, minimum=0, maximum=100),)
    page = book.get("open-page")
    assert page.args == (
        ArgSpec("page", ArgKind.STRING, max_length=64, pattern="[A-Za-z0-9_/-]+"),
        ArgSpec("fullscreen", ArgKind.BOOL, optional=True),
    )


def test_a_file_may_change_a_builtins_description_and_roles_not_what_it_does(
    book: RoutineBook,
) -> None:
    builtins = RoutineBook.builtins_only()
    status, message = book.get("status"), book.get("show-message")
    assert status.description == "Uptime and what is on screen"
    assert status.roles == frozenset({Role.OWNER, Role.GUEST})
    assert status.builtin == "status" and status.command is None and status.args == ()
    assert message.roles == frozenset({Role.OWNER})
    assert message.description == builtins.get("show-message").description
    assert message.args == builtins.get("show-message").args


def test_builtins_only_has_status_and_show_message_for_everyone() -> None:
    book = RoutineBook.builtins_only()
    assert book.names == ("status", "show-message")
    assert RoutineBook.parse("").names == book.names
    assert RoutineBook.parse("[routines]\n").names == book.names
    message = book.get("show-message")
    assert message.args == (ArgSpec("text", ArgKind.STRING, max_length=280),)
    assert [routine.describe() for routine in book.for_role(Role.GUEST)] == [
        {
            "name": "status",
            "description": "Show the kiosk's status",
            "args": [],
            "roles": ["owner", "guest"],
        },
        {
            "name": "show-message",
            "description": "Show a message on the screen",
            "args": [{"name": "text", "kind": "string"}],
            "roles": ["owner", "guest"],
        },
    ]


def test_describe_is_plain_json(book: RoutineBook) -> None:
    described = book.get("open-page").describe()
    assert described == {
        "name": "open-page",
        "description": "Open a page of the family wiki",
        "args": [{"name": "page", "kind": "string"}, {"name": "fullscreen", "kind": "bool"}],
        "roles": ["guest"],
    }
    assert json.loads(json.dumps(described)) == described
    assert type(described["args"][0]["kind"]) is str


def test_roles_filter_what_each_person_sees(book: RoutineBook) -> None:
    assert [r.name for r in book.for_role(Role.OWNER)] == [
        "status",
        "show-message",
        "screen",
        "volume",
    ]
    assert [r.name for r in book.for_role(Role.GUEST)] == ["status", "screen", "open-page"]
    assert book.get("volume").allows(Role.OWNER) and not book.get("volume").allows(Role.GUEST)
    assert [d["name"] for d in book.describe(Role.GUEST)] == ["status", "screen", "open-page"]


def test_an_unknown_routine_is_an_error(book: RoutineBook) -> None:
    with pytest.raises(RoutineError, match="no routine named 'reboot'"):
        book.get("reboot")


def test_load_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "routines.toml"
    path.write_text(EXAMPLE)
    assert RoutineBook.load(path).names == RoutineBook.parse(EXAMPLE).names

    path.write_text('[routines.screen]\ncommand = ["/bin/true"]\ncolour = "red"\n')
    with pytest.raises(RoutineError, match=rf"^{path}: routine 'screen': unknown key 'colour'"):
        RoutineBook.load(path)

    path.write_text('[routines.a]\ncommand = ["/bin/true"]\n\ntimeout = = 3\n')
    with pytest.raises(RoutineError, match=rf"^{path}: not valid TOML: .*line 4"):
        RoutineBook.load(path)

    path.write_bytes(b'[routines.a]\ndescription = "\xff"\n')
    with pytest.raises(RoutineError, match=rf"^{path}: not UTF-8"):
        RoutineBook.load(path)

    path.write_bytes(b"#" * (1 << 20) + b"\n")
    with pytest.raises(RoutineError, match="larger than"):
        RoutineBook.load(path)

    with pytest.raises(RoutineError, match=rf"^{tmp_path / 'absent.toml'}: cannot read"):
        RoutineBook.load(tmp_path / "absent.toml")


def routines_toml(count: int) -> str:
    return "".join(f'[routines.r{index}]\ncommand = ["/bin/true"]\n' for index in range(count))


def test_at_most_64_routines() -> None:
    assert len(RoutineBook.parse(routines_toml(MAX_ROUTINES))) == MAX_ROUTINES + 2
    with pytest.raises(RoutineError, match="65 routines; at most 64"):
        RoutineBook.parse(routines_toml(MAX_ROUTINES + 1))


def test_doubled_braces_are_literal_braces(book: RoutineBook) -> None:
    assert book.get("open-page").argv(["Home", "true"]) == [
        "/usr/bin/kiosk-browser",
        "--",
        "Home",
        "true",
        "{literal}",
    ]
    # An optional argument not given drops its element.
    assert book.get("open-page").argv(["Home"]) == [
        "/usr/bin/kiosk-browser",
        "--",
        "Home",
        "{literal}",
    ]


SIXTY_FIVE_ELEMENTS = ", ".join(['"/bin/echo"'] * 65)
SEVENTEEN_ARGS = ", ".join(f'{{ name = "a{i}", kind = "bool" }}' for i in range(17))

BAD_FILES: list[tuple[str, str]] = [
    # TOML itself.
    ("[routines.a\n", "not valid TOML.*line 1"),
    ('[routines.a]\ncommand = ["/bin/true"]\ncommand = ["/bin/false"]\n', "not valid TOML.*line 3"),
    # Layout.
    ('title = "tv"\n', "unknown top-level key 'title'"),
    ('routines = "screen"\n', "'routines' must be a table"),
    ("[routines]\nscreen = 3\n", "routine 'screen': must be a table"),
    # Names.
    ('[routines.Screen]\ncommand = ["/bin/true"]\n', "routine 'Screen': bad name"),
    ('[routines.1screen]\ncommand = ["/bin/true"]\n', "routine '1screen': bad name"),
    ('[routines."screen off"]\ncommand = ["/bin/true"]\n', "routine 'screen off': bad name"),
    (f'[routines.{"a" * 33}]\ncommand = ["/bin/true"]\n', "bad name"),
    # Keys.
    ('[routines.a]\ncommand = ["/bin/true"]\nshell = true\n', "routine 'a': unknown key 'shell'"),
    ('[routines.a]\nbuiltin = "status"\n', "routine 'a': unknown key 'builtin'"),
    ('[routines.a]\ndescription = "no command"\n', "routine 'a': needs a 'command'"),
    ('[routines.status]\ncommand = ["/bin/true"]\n', "routine 'status': is a built-in; only"),
    ("[routines.show-message]\ntimeout = 3\n", "routine 'show-message': is a built-in"),
    ("[routines.status]\nroles = []\n", "'roles' must be a non-empty list"),
    # Description.
    ('[routines.a]\ncommand = ["/bin/true"]\ndescription = 3\n', "'description' must be a string"),
    (
        f'[routines.a]\ncommand = ["/bin/true"]\ndescription = "{"x" * 201}"\n',
        "'description' is over 200 characters",
    ),
    ('[routines.a]\ncommand = ["/bin/true"]\ndescription = "a\\u001bb"\n', "control characters"),
    # Roles.
    ('[routines.a]\ncommand = ["/bin/true"]\nroles = "owner"\n', "'roles' must be a non-empty"),
    ('[routines.a]\ncommand = ["/bin/true"]\nroles = ["admin"]\n', "unknown role 'admin'"),
    ('[routines.a]\ncommand = ["/bin/true"]\nroles = ["owner", "owner"]\n', "listed twice"),
    # Timeout.
    ('[routines.a]\ncommand = ["/bin/true"]\ntimeout = 0\n', "'timeout' must be more than 0"),
    ('[routines.a]\ncommand = ["/bin/true"]\ntimeout = 301\n', "at most 300 seconds"),
    ('[routines.a]\ncommand = ["/bin/true"]\ntimeout = -1\n', "'timeout' must be more than 0"),
    ('[routines.a]\ncommand = ["/bin/true"]\ntimeout = nan\n', "'timeout' must be more than 0"),
    ('[routines.a]\ncommand = ["/bin/true"]\ntimeout = "10"\n', "'timeout' must be a number"),
    ('[routines.a]\ncommand = ["/bin/true"]\ntimeout = true\n', "'timeout' must be a number"),
    # Command.
    ('[routines.a]\ncommand = "/bin/true"\n', "'command' must be a non-empty list"),
    ("[routines.a]\ncommand = []\n", "'command' must be a non-empty list"),
    ('[routines.a]\ncommand = ["/bin/echo", 3]\n', r"command\[1\] must be a string"),
    ('[routines.a]\ncommand = ["true"]\n', r"command\[0\] 'true' must be an absolute path"),
    ('[routines.a]\ncommand = ["bin/true"]\n', "must be an absolute path"),
    (
        '[routines.a]\ncommand = ["{prog}"]\nargs = [{ name = "prog", kind = "string" }]\n',
        r"command\[0\] must be a fixed absolute path, not an argument",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{text}"]\n',
        r"names \{text\}, which is not a declared",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "--text={text}"]\n'
        'args = [{ name = "text", kind = "string" }]\n',
        "an argument must be a whole element",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{text"]\n'
        'args = [{ name = "text", kind = "string" }]\n',
        "an argument must be a whole element",
    ),
    ('[routines.a]\ncommand = ["/bin/echo", "{Bad Name}"]\n', r"names \{Bad Name\}, which is not"),
    (
        '[routines.a]\ncommand = ["/bin/echo"]\nargs = [{ name = "text", kind = "string" }]\n',
        "arg 'text' is declared but not in 'command'",
    ),
    ('[routines.a]\ncommand = ["/bin/echo", "a\\u0000b"]\n', "has a NUL"),
    (f"[routines.a]\ncommand = [{SIXTY_FIVE_ELEMENTS}]\n", "more than 64 elements"),
    # Env.
    ('[routines.a]\ncommand = ["/bin/true"]\nenv = ["DISPLAY=:0"]\n', "'env' must be a table"),
    ('[routines.a]\ncommand = ["/bin/true"]\nenv = { display = ":0" }\n', "bad variable name"),
    ('[routines.a]\ncommand = ["/bin/true"]\nenv = { DISPLAY = 0 }\n', "env DISPLAY: the value"),
    # Args.
    ('[routines.a]\ncommand = ["/bin/true"]\nargs = { name = "x" }\n', "'args' must be a list"),
    ('[routines.a]\ncommand = ["/bin/true"]\nargs = ["x"]\n', r"args\[0\]: must be a table"),
    ('[routines.a]\ncommand = ["/bin/true"]\nargs = [{ kind = "int" }]\n', "bad or missing 'name'"),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x-y}"]\nargs = [{ name = "x-y", kind = "int" }]\n',
        "bad or missing 'name' 'x-y'",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\nargs = [{ name = "x" }]\n',
        r"args\[0\] \(x\): bad or missing 'kind' None",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\nargs = [{ name = "x", kind = "float" }]\n',
        "bad or missing 'kind' 'float' \\(string, int, choice, bool\\)",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "int", default = 3 }]\n',
        "unknown key 'default'",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "int", max_length = 3 }]\n',
        "'max_length' does not apply to int args",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "string", choices = ["a"] }]\n',
        "'choices' does not apply to string args",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "string", max_length = 0 }]\n',
        "'max_length' must be from 1 to 4096",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "string", max_length = "9" }]\n',
        "'max_length' must be an integer",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "string", pattern = "[a-" }]\n',
        "'pattern' is not a valid regular expression",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "int", minimum = 5, maximum = 1 }]\n',
        "'minimum' is greater than 'maximum'",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "int", minimum = 1.5 }]\n',
        "'minimum' must be an integer",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\nargs = [{ name = "x", kind = "choice" }]\n',
        "needs a non-empty 'choices' list",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "choice", choices = ["on", "on"] }]\n',
        "'choices' lists a value twice",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "choice", choices = ["on", ""] }]\n',
        "choice '' must be a non-empty string",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "bool", optional = "yes" }]\n',
        "'optional' must be true or false",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}", "{y}"]\n'
        'args = [{ name = "x", kind = "bool", optional = true }, { name = "y", kind = "bool" }]\n',
        "arg 'y' is required but follows an optional one",
    ),
    (
        '[routines.a]\ncommand = ["/bin/echo", "{x}"]\n'
        'args = [{ name = "x", kind = "bool" }, { name = "x", kind = "int" }]\n',
        "arg 'x' is declared twice",
    ),
    (
        f'[routines.a]\ncommand = ["/bin/echo"]\nargs = [{SEVENTEEN_ARGS}]\n',
        "more than 16 args",
    ),
]


@pytest.mark.parametrize(("text", "error"), BAD_FILES)
def test_a_bad_file_is_refused_with_a_clear_error(text: str, error: str) -> None:
    with pytest.raises(RoutineError, match=rf"^<routines>: .*{error}"):
        RoutineBook.parse(text)


def test_a_duplicate_routine_in_a_book_is_refused() -> None:
    status = RoutineBook.builtins_only().get("status")
    with pytest.raises(RoutineError, match="'status' is declared twice"):
        RoutineBook([*RoutineBook.builtins_only().routines, status])
    with pytest.raises(RoutineError, match="built-in routine 'show-message' is missing"):
        RoutineBook([status])


# Validating arguments.


def test_arguments_in_normal_form(book: RoutineBook) -> None:
    assert book.validate(book.get("status"), []) == []
    assert book.validate(book.get("screen"), ["off"]) == ["off"]
    assert book.validate(book.get("volume"), ["0"]) == ["0"]
    assert book.validate(book.get("volume"), ["100"]) == ["100"]
    assert book.validate(book.get("open-page"), ["recipes/bread"]) == ["recipes/bread"]
    assert book.validate(book.get("open-page"), ["Home", "false"]) == ["Home", "false"]
    assert book.validate(book.get("show-message"), ["x" * 280]) == ["x" * 280]
    # A built-in's string may start with '-': it is not a command line.
    assert book.validate(book.get("show-message"), ["-- back at 6 --"]) == ["-- back at 6 --"]
    assert book.validate(book.get("show-message"), ["Dîner à 19h 🍲"]) == ["Dîner à 19h 🍲"]


@pytest.mark.parametrize(
    ("name", "args", "error"),
    [
        ("status", ["x"], "status: takes 0 arguments, got 1"),
        ("screen", [], r"screen: takes 1 argument \(<state>\), got 0"),
        ("screen", ["on", "off"], "takes 1 argument"),
        ("open-page", [], r"open-page: takes 1 to 2 arguments \(<page> \[fullscreen\]\), got 0"),
        ("open-page", ["a", "true", "x"], "takes 1 to 2 arguments"),
        ("screen", ["ON"], "screen: state: must be one of on, off"),
        ("screen", ["on "], "must be one of on, off"),
        ("volume", ["101"], "volume: percent: 101 is more than 100"),
        ("volume", ["-1"], "percent: -1 is less than 0"),
        ("volume", ["007"], "'007' is not an integer"),
        ("volume", ["+5"], "'\\+5' is not an integer"),
        ("volume", [" 5"], "is not an integer"),
        ("volume", ["5\n"], "is not an integer"),
        ("volume", ["5_0"], "is not an integer"),
        ("volume", ["1e2"], "is not an integer"),
        ("volume", ["0x10"], "is not an integer"),
        ("volume", ["\u0665"], "is not an integer"),  # an Arabic-Indic five
        ("volume", [""], "is not an integer"),
        ("volume", ["9" * 5000], r"'9{32}\.\.\.' is not an integer"),
        ("open-page", ["Home", "yes"], "fullscreen: must be true or false"),
        ("open-page", ["Home", "True"], "must be true or false"),
        ("open-page", ["Home page"], "page: does not match the pattern"),
        ("open-page", ["Home\n"], "page: control characters"),
        ("open-page", ["a" * 65], "page: longer than 64 characters"),
        ("open-page", ["Home; reboot"], "does not match the pattern"),
        ("show-message", ["x" * 281], "text: longer than 280 characters"),
        ("show-message", ["a\0b"], "control characters"),
        ("show-message", ["two\nlines"], "control characters"),
        ("show-message", ["\x1b[2J"], "control characters"),
        ("show-message", ["del\x7f"], "control characters"),
        ("show-message", ["c1\x85"], "control characters"),
        ("show-message", ["\ud800"], "control characters"),
    ],
)
def test_bad_arguments_are_refused(
    book: RoutineBook, name: str, args: list[str], error: str
) -> None:
    with pytest.raises(RoutineError, match=error):
        book.validate(book.get(name), args)


def test_a_pattern_must_match_the_whole_argument() -> None:
    routine = python_routine("", ArgSpec("code", ArgKind.STRING, pattern="[0-9]{3}"))
    assert validate_args(routine, ["123"]) == ["123"]
    for value in ("1234", "a123", "12", "123 "):
        with pytest.raises(RoutineError, match="does not match the pattern"):
            validate_args(routine, [value])


def test_strings_default_to_256_characters_and_no_leading_dash_for_commands() -> None:
    routine = python_routine("", ArgSpec("text", ArgKind.STRING))
    assert validate_args(routine, ["x" * 256]) == ["x" * 256]
    with pytest.raises(RoutineError, match="longer than 256 characters"):
        validate_args(routine, ["x" * 257])
    for value in ("-rf", "--output=/etc/passwd", "-"):
        with pytest.raises(RoutineError, match="may not start with '-'"):
            validate_args(routine, [value])
    assert validate_args(routine, ["a-b"]) == ["a-b"]
    assert validate_args(routine, [""]) == [""]
    dashed = python_routine("", ArgSpec("flag", ArgKind.STRING, pattern="-[a-z]"))
    assert validate_args(dashed, ["-v"]) == ["-v"]


def test_ints_are_normalised_and_unbounded_ints_are_accepted() -> None:
    routine = python_routine("", ArgSpec("n", ArgKind.INT))
    assert validate_args(routine, ["-0"]) == ["0"]
    assert validate_args(routine, ["-12"]) == ["-12"]
    assert validate_args(routine, ["9" * 32]) == ["9" * 32]


def test_args_must_be_a_list_of_strings(book: RoutineBook) -> None:
    with pytest.raises(RoutineError, match="args must be a list"):
        book.validate(book.get("screen"), "on")
    with pytest.raises(RoutineError, match="state: must be a string"):
        book.validate(book.get("screen"), [1])  # type: ignore[list-item]


def test_a_book_validates_only_its_own_routines(book: RoutineBook) -> None:
    stranger = dataclasses.replace(book.get("screen"), roles=frozenset({Role.GUEST}))
    with pytest.raises(RoutineError, match="is not one of this kiosk's"):
        book.validate(stranger, ["on"])


# Running commands.

ARGV_PRINTER = "import json, sys; print(json.dumps(sys.argv[1:]))"
INJECTIONS = [
    '"; rm -rf /',
    "$(touch {marker})",
    "`touch {marker}`",
    "; touch {marker}",
    "&& touch {marker}",
    "| touch {marker}",
    "' ; touch {marker} ; '",
    "${{IFS}}touch${{IFS}}{marker}",
    "* ~ ?",
]


async def test_shell_injection_arrives_as_one_literal_argument(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    routine = python_routine(
        ARGV_PRINTER, ArgSpec("text", ArgKind.STRING), ArgSpec("more", ArgKind.STRING)
    )
    for template in INJECTIONS:
        attack = template.format(marker=marker)
        result = await run(routine, attack, "tail")
        assert result.ok and result.exit_code == 0
        assert json.loads(result.output) == [attack, "tail"]
    assert not marker.exists()


async def test_shell_injection_through_echo_runs_no_second_command(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    book = RoutineBook.parse(
        '[routines.say]\ncommand = ["/bin/echo", "{text}"]\n'
        'args = [{ name = "text", kind = "string", max_length = 4096 }]\n'
    )
    # Three copies of the marker's path: long when pytest's temporary directory is deep.
    attack = f"hi; touch {marker} $(touch {marker}) `touch {marker}`"
    result = await run(book.get("say"), attack)
    assert result == RoutineResult(True, 0, attack + "\n", result.duration_ms)
    assert not marker.exists()


async def test_bad_arguments_raise_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    routine = python_routine(
        "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()",
        ArgSpec("path", ArgKind.STRING, pattern="/.*"),
        ArgSpec("n", ArgKind.INT, maximum=3),
    )
    with pytest.raises(RoutineError, match="n: 4 is more than 3"):
        await run(routine, str(marker), "4")
    with pytest.raises(RoutineError, match="takes 2 arguments"):
        await run(routine, str(marker))
    assert not marker.exists()
    assert (await run(routine, str(marker), "3")).ok
    assert marker.exists()


async def test_a_timeout_kills_the_command_and_everything_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    book = RoutineBook.parse(
        '[routines.nap]\ncommand = ["/bin/sleep", "30"]\ntimeout = 0.5\n'
        "[routines.family]\n"
        'command = ["/bin/sh", "-c", "sleep 30 & echo $! > \\"$0\\"; wait", "{pid_file}"]\n'
        'args = [{ name = "pid_file", kind = "string" }]\n'
        "timeout = 2\n"
    )
    started = time.monotonic()
    result = await run(book.get("nap"))
    assert time.monotonic() - started < 5
    assert not result.ok and result.exit_code is None
    assert "timed out after 0.5 s" in result.output
    assert 400 < result.duration_ms < 5000

    result = await run(book.get("family"), str(pid_file))
    assert not result.ok and "timed out after 2 s" in result.output
    assert result.duration_ms < 7000
    await wait_ended(int(pid_file.read_text()))


def is_running(pid: int) -> bool:
    """Whether `pid` is alive (a zombie waiting for a reaper counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_ended(pid: int) -> None:
    """Waits (on a pidfd, not a clock) until `pid` has exited; a killed orphan of the routine
    dies asynchronously, after run_routine has returned."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(TEST_TIMEOUT):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    assert not is_running(pid)


async def read_fifo(fifo: Path) -> str:
    """Everything one writer puts into `fifo`, waiting on the file descriptor, not a clock."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    data = b""
    try:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                continue
            if not chunk:
                return data.decode()
            data += chunk
    finally:
        os.close(fd)


async def test_a_cancelled_caller_kills_the_command(tmp_path: Path) -> None:
    fifo = tmp_path / "pid.fifo"
    os.mkfifo(fifo)
    routine = python_routine(
        "import os, sys, time\n"
        "with open(sys.argv[1], 'w') as f: f.write(str(os.getpid()))\n"
        "time.sleep(30)",
        ArgSpec("fifo", ArgKind.STRING),
        timeout_s=60,
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, routine, str(fifo))
            pid = int(await read_fifo(fifo))
            assert is_running(pid)
            nursery.cancel_scope.cancel()
    assert not is_running(pid)


async def test_output_is_capped_and_says_truncated() -> None:
    routine = python_routine("import sys; sys.stdout.write('x' * 200_000)")
    result = await run(routine, max_output_bytes=1000)
    assert result.ok and result.exit_code == 0
    assert result.output == "x" * 1000 + "\n" + TRUNCATED_NOTE
    full = await run(routine)
    assert full.output == "x" * 65536 + "\n" + TRUNCATED_NOTE
    exact = await run(python_routine("print('a' * 9)"), max_output_bytes=10)
    assert exact.output == "a" * 9 + "\n"


async def test_output_is_utf8_with_bad_bytes_replaced() -> None:
    routine = python_routine("import sys; sys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff!')")
    assert (await run(routine)).output == "café \ufffd!"
    # A cap in the middle of a character replaces the half character.
    assert (await run(routine, max_output_bytes=4)).output == "caf\ufffd\n" + TRUNCATED_NOTE


async def test_a_non_zero_exit_is_not_ok_and_stderr_is_in_the_output() -> None:
    routine = python_routine(
        "import sys; print('out'); print('oops', file=sys.stderr); sys.exit(3)"
    )
    result = await run(routine)
    assert not result.ok and result.exit_code == 3
    assert "out\n" in result.output and "oops\n" in result.output


async def test_a_signal_is_a_negative_exit_code() -> None:
    result = await run(python_routine("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"))
    assert result == RoutineResult(False, -15, "", result.duration_ms)


async def test_a_missing_program_is_a_failed_result() -> None:
    book = RoutineBook.parse('[routines.gone]\ncommand = ["/nonexistent/p2pid-tool"]\n')
    result = await run(book.get("gone"))
    assert not result.ok and result.exit_code is None
    assert result.output == "cannot run /nonexistent/p2pid-tool: No such file or directory"


async def test_commands_get_a_minimal_environment_no_stdin_and_a_fixed_directory() -> None:
    routine = python_routine(
        "import json, os, sys\n"
        "print(json.dumps([dict(os.environ), os.getcwd(), sys.stdin.read()]))",
        env={"DISPLAY": ":0"},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("P2PID_SECRET", "do not leak")
        result = await run(routine)
    environment, cwd, stdin = json.loads(result.output)
    environment.pop("LC_CTYPE", None)  # Python may coerce the C locale itself
    assert environment == {**BASE_ENVIRONMENT, "DISPLAY": ":0"}
    assert cwd == "/"
    assert stdin == ""


async def test_run_argv_needs_an_absolute_program() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        await run_argv(["echo", "x"], timeout_s=1)
    with pytest.raises(ValueError, match="absolute path"):
        await run_argv([], timeout_s=1)


# Built-ins.


async def test_builtins_are_dispatched_with_validated_args(book: RoutineBook) -> None:
    calls: list[tuple[str, list[str]]] = []

    async def status(args: list[str]) -> str:
        calls.append(("status", args))
        return "up 3 days; showing the photo frame"

    async def show_message(args: list[str]) -> str:
        calls.append(("show-message", args))
        return f"showing {args[0]!r}"

    builtins: dict[str, BuiltinFunction] = {"status": status, "show-message": show_message}
    with trio.fail_after(TEST_TIMEOUT):
        first = await run_routine(book.get("status"), [], builtins=builtins)
        second = await run_routine(book.get("show-message"), ["Dinner!"], builtins=builtins)
        with pytest.raises(RoutineError, match="text: control characters"):
            await run_routine(book.get("show-message"), ["a\nb"], builtins=builtins)
    assert first == RoutineResult(
        True, None, "up 3 days; showing the photo frame", first.duration_ms
    )
    assert second.ok and second.output == "showing 'Dinner!'"
    assert calls == [("status", []), ("show-message", ["Dinner!"])]


async def test_a_builtin_the_kiosk_does_not_provide_is_an_error(book: RoutineBook) -> None:
    with pytest.raises(RoutineError, match="built-in 'status' is not available"):
        await run_routine(book.get("status"), [], builtins={})


async def test_a_failing_builtin_is_a_failed_result(book: RoutineBook) -> None:
    async def broken(args: list[str]) -> str:
        raise RuntimeError("no screen attached")

    result = await run_routine(book.get("status"), [], builtins={"status": broken})
    assert result == RoutineResult(
        False, None, "status failed: no screen attached", result.duration_ms
    )


async def test_a_builtin_that_hangs_times_out(book: RoutineBook) -> None:
    async def hang(args: list[str]) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    routine = dataclasses.replace(book.get("status"), timeout_s=0.05)
    with trio.fail_after(TEST_TIMEOUT):
        result = await run_routine(routine, [], builtins={"status": hang})
    assert not result.ok and result.exit_code is None
    assert result.output == "[timed out after 0.05 s]"


async def test_builtin_output_is_capped_too(book: RoutineBook) -> None:
    async def chatty(args: list[str]) -> str:
        return "é" * 100

    result = await run_routine(
        book.get("status"), [], builtins={"status": chatty}, max_output_bytes=11
    )
    assert result.output == "é" * 5 + "\ufffd\n" + TRUNCATED_NOTE


# The kiosk guide's example.

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "kiosk-guide.md"


def test_the_kiosk_guides_example_file_parses_as_the_guide_says() -> None:
    text = GUIDE.read_text()
    marker = "<!-- example: routines.toml"
    block = text[text.index(marker) :].split("```toml\n", 1)[1].split("```", 1)[0]
    book = RoutineBook.parse(block, source="kiosk-guide.md")
    assert book.names == (
        "status",
        "show-message",
        "screen",
        "volume",
        "open-page",
        "restart-player",
    )
    assert [r.name for r in book.for_role(Role.GUEST)] == ["status", "screen", "open-page"]
    assert book.get("volume").argv(book.validate(book.get("volume"), ["40"])) == [
        "/usr/local/lib/p2pid/set-volume",
        "40",
    ]
    assert book.get("open-page").argv(["recipes/bread"]) == [
        "/usr/local/lib/p2pid/show-page",
        "--",
        "recipes/bread",
    ]

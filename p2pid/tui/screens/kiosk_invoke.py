"""Running a kiosk's routines: the ones this person's role may run, a form with one field per
declared argument, and a log of what each run answered (output, exit code, time taken)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, OptionList, RichLog, Static
from textual.widgets.option_list import Option

from p2pid.rpc.protocol import RpcError
from p2pid.tui.widgets.contact_records import BAD, DIM, GOOD, call_daemon
from p2pid.tui.widgets.kiosk_table import Kiosk, Routine
from p2pid.tui.widgets.routine_form import RoutineForm

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp


def outcome_line(routine: str, result: dict[str, Any]) -> Text:
    exit_code = result.get("exit_code")
    took = f"{float(result.get('duration_ms', 0.0)):.0f} ms"
    code = "" if exit_code is None else f", exit {exit_code}"
    if result.get("ok"):
        return Text(f"▶ {routine}: ✓ ok{code}, {took}", style=GOOD)
    return Text(f"▶ {routine}: ✗ failed{code}, {took}", style=BAD)


class InvokeRoutineScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+r", "run", "Run"),
    ]

    def __init__(self, kiosk: Kiosk) -> None:
        super().__init__()
        self.kiosk = kiosk
        self.routines = kiosk.allowed_routines()
        self.runs = 0

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="invoke-dialog", classes="dialog"):
            yield Static(
                f"Routines on {self.kiosk.name} (you are its {self.kiosk.role})",
                classes="title",
                markup=False,
            )
            with Horizontal(id="invoke-body"):
                yield OptionList(
                    *[Option(r.name, id=r.name) for r in self.routines], id="invoke-routines"
                )
                with Vertical(id="invoke-side"):
                    yield Static("", id="invoke-description", markup=False)
                    yield RoutineForm(id="invoke-form")
                    with Horizontal(classes="buttons"):
                        yield Button("Run (Ctrl+R)", variant="primary", id="invoke-run")
                        yield Button("Close", id="invoke-close")
            yield RichLog(id="invoke-log", wrap=True, markup=False, highlight=False)
        yield Footer()

    async def on_mount(self) -> None:
        routines = self.query_one("#invoke-routines", OptionList)
        if not self.routines:
            self.query_one("#invoke-description", Static).update(
                f"{self.kiosk.name} allows no routines to its {self.kiosk.role}s."
            )
            self.query_one("#invoke-run", Button).disabled = True
            routines.display = False
            return
        routines.highlighted = 0
        await self.choose(self.routines[0])
        routines.focus()

    @property
    def routine(self) -> Routine | None:
        return self.query_one(RoutineForm).routine

    async def choose(self, routine: Routine) -> None:
        self.query_one("#invoke-description", Static).update(
            f"{routine.name}: {routine.description}" if routine.description else routine.name
        )
        await self.query_one(RoutineForm).show(routine)

    @on(OptionList.OptionHighlighted, "#invoke-routines")
    async def _highlighted(self, highlighted: OptionList.OptionHighlighted) -> None:
        routine = next((r for r in self.routines if r.name == highlighted.option.id), None)
        if routine is not None and routine != self.routine:
            await self.choose(routine)

    @on(OptionList.OptionSelected, "#invoke-routines")
    def _selected(self) -> None:
        """Enter on a routine: to its first field, or run it when it takes none."""
        inputs = self.query_one(RoutineForm).inputs
        if inputs:
            inputs[0].focus()
        else:
            self.action_run()

    @on(Input.Submitted, ".routine-arg")
    def _submitted(self, submitted: Input.Submitted) -> None:
        inputs = self.query_one(RoutineForm).inputs
        index = inputs.index(submitted.input) if submitted.input in inputs else -1
        if 0 <= index < len(inputs) - 1:
            inputs[index + 1].focus()
        else:
            self.action_run()

    @on(Button.Pressed, "#invoke-run")
    def action_run(self) -> None:
        routine = self.routine
        if routine is None or self.query_one("#invoke-run", Button).disabled:
            return
        self.invoke(routine, self.query_one(RoutineForm).values())

    @work(exclusive=True, group="invoke")
    async def invoke(self, routine: Routine, args: list[str]) -> None:
        log = self.query_one("#invoke-log", RichLog)
        run = self.query_one("#invoke-run", Button)
        run.disabled = True
        shown = " ".join([routine.name, *(repr(a) for a in args)])
        log.write(Text(f"$ {shown}", style=DIM))
        try:
            result = await call_daemon(
                self.p2pid,
                "kiosk.invoke",
                kiosk=self.kiosk.peer_id,
                routine=routine.name,
                args=args,
            )
        except RpcError as error:
            log.write(Text(f"▶ {routine.name}: ✗ {error.message}", style=BAD))
            return
        finally:
            run.disabled = False
        self.runs += 1
        log.write(outcome_line(routine.name, result))
        output = str(result.get("output", ""))
        if output:
            log.write(Text(output.rstrip("\n")))

    @on(Button.Pressed, "#invoke-close")
    def action_close(self) -> None:
        self.dismiss(None)

    def commands(self) -> Iterable[SystemCommand]:
        for routine in self.routines:
            yield SystemCommand(
                f"Routine {routine.name}",
                routine.description or f"on {self.kiosk.name}",
                lambda routine=routine: self._pick(routine),
            )
        yield SystemCommand("Close", f"the routines of {self.kiosk.name}", self.action_close)

    def _pick(self, routine: Routine) -> None:
        options = self.query_one("#invoke-routines", OptionList)
        options.highlighted = self.routines.index(routine)
        options.focus()

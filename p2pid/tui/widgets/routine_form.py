"""A kiosk routine's arguments as a form: one labelled Input per declared argument.

The kiosk validates every argument (and never passes one through a shell); the form only keeps
numbers numeric where the routine declares a number, and hands back the values as typed."""

from __future__ import annotations

from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from p2pid.tui.widgets.kiosk_table import Routine

MAX_ARG_CHARACTERS = 4096
_INPUT_TYPES = {"int": "integer", "integer": "integer", "float": "number", "number": "number"}


class RoutineForm(Vertical):
    """Empty until `show` gets a routine; `values()` are its arguments, in declared order."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.routine: Routine | None = None

    async def show(self, routine: Routine | None) -> None:
        self.routine = routine
        await self.remove_children()
        if routine is None:
            return
        widgets: list[Label | Input | Static] = []
        for index, arg in enumerate(routine.args):
            widgets.append(Label(f"{arg.name} ({arg.kind})", classes="routine-arg-label"))
            widgets.append(
                Input(
                    placeholder=arg.kind,
                    type=_INPUT_TYPES.get(arg.kind.lower(), "text"),  # type: ignore[arg-type]
                    max_length=MAX_ARG_CHARACTERS,
                    id=f"routine-arg-{index}",
                    classes="routine-arg",
                )
            )
        if not routine.args:
            widgets.append(Static("It takes no arguments.", classes="hint"))
        await self.mount_all(widgets)

    @property
    def inputs(self) -> list[Input]:
        return list(self.query(".routine-arg").results(Input))

    def values(self) -> list[str]:
        return [entry.value for entry in self.inputs]

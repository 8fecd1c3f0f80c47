"""An undo history without Qt: commands that swap state, macros, merging of successive edits.

The semantics follow ``QUndoStack`` (which it replaces so that plans can live in the Qt-free
session): ``push`` runs the command's ``redo`` and then tries to merge it into the command on
top (``merge_with``), which is how one handle drag becomes one undo step; pushing drops the
commands that were undone; a macro groups the commands pushed between ``begin_macro`` and
``end_macro`` into one step, undone in reverse order.
"""
from __future__ import annotations

from psygnal import Signal

__all__ = ["Command", "UndoHistory"]


class Command:
    """One undoable edit. Subclasses implement ``redo``/``undo``; ``merge_with`` may absorb
    the next command (return True) so both are undone together."""

    def __init__(self, text: str = ""):
        self.text = text

    def redo(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def undo(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def merge_with(self, other: "Command") -> bool:
        return False


class _Macro(Command):
    def __init__(self, text: str):
        super().__init__(text)
        self.children: list[Command] = []

    def redo(self) -> None:
        for c in self.children:
            c.redo()

    def undo(self) -> None:
        for c in reversed(self.children):
            c.undo()


class UndoHistory:
    """Commands in order and the index of the next one to redo. Signal ``changed()`` after
    every push, undo, redo or clear (what an undo button's state depends on)."""

    changed = Signal()

    def __init__(self):
        self._commands: list[Command] = []
        self._index = 0
        self._macros: list[_Macro] = []

    def push(self, command: Command) -> None:
        """Do ``command`` and record it (inside a macro: as part of the macro)."""
        command.redo()
        if self._macros:
            self._macros[-1].children.append(command)
            return
        del self._commands[self._index:]
        if self._commands and self._commands[-1].merge_with(command):
            self.changed.emit()
            return
        self._commands.append(command)
        self._index = len(self._commands)
        self.changed.emit()

    def begin_macro(self, text: str) -> None:
        self._macros.append(_Macro(text))

    def end_macro(self) -> None:
        if not self._macros:
            raise RuntimeError("end_macro without begin_macro")
        macro = self._macros.pop()
        if self._macros:
            self._macros[-1].children.append(macro)
            return
        del self._commands[self._index:]
        self._commands.append(macro)
        self._index = len(self._commands)
        self.changed.emit()

    def undo(self) -> None:
        if self._macros:
            raise RuntimeError("cannot undo inside a macro")
        if self._index > 0:
            self._index -= 1
            self._commands[self._index].undo()
            self.changed.emit()

    def redo(self) -> None:
        if self._macros:
            raise RuntimeError("cannot redo inside a macro")
        if self._index < len(self._commands):
            self._commands[self._index].redo()
            self._index += 1
            self.changed.emit()

    def clear(self) -> None:
        self._commands.clear()
        self._index = 0
        self._macros.clear()
        self.changed.emit()

    def can_undo(self) -> bool:
        return self._index > 0 and not self._macros

    def can_redo(self) -> bool:
        return self._index < len(self._commands) and not self._macros

    def undo_text(self) -> str:
        return self._commands[self._index - 1].text if self._index > 0 else ""

    def redo_text(self) -> str:
        return self._commands[self._index].text if self._index < len(self._commands) else ""

    def count(self) -> int:
        return len(self._commands)

    @property
    def index(self) -> int:
        return self._index

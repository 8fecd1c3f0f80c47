"""UndoHistory (the plan book's undo, without Qt): QUndoStack's push, merge and macro rules."""
from __future__ import annotations

import pytest

from app.state.history import Command, UndoHistory


class Add(Command):
    """Adds ``n`` to a shared list's total; merges with the next Add of the same ``key``."""

    def __init__(self, box: list, n: int, key=None):
        super().__init__(f"add {n}")
        self.box, self.n, self.key = box, n, key

    def redo(self):
        self.box[0] += self.n

    def undo(self):
        self.box[0] -= self.n

    def merge_with(self, other) -> bool:
        if self.key is None or not isinstance(other, Add) or other.key != self.key:
            return False
        self.n += other.n
        self.text = f"add {self.n}"
        return True


def test_push_undo_redo_and_the_redo_tail_dropped():
    box, h = [0], UndoHistory()
    changes = []
    h.changed.connect(lambda: changes.append(h.index))
    for n in (1, 2, 4):
        h.push(Add(box, n))
    assert box == [7] and h.count() == 3 and h.undo_text() == "add 4" and not h.can_redo()
    h.undo()
    h.undo()
    assert box == [1] and h.redo_text() == "add 2" and h.can_undo() and h.can_redo()
    h.push(Add(box, 10))                      # a new edit after undo: "add 2" and "add 4" are gone
    assert box == [11] and h.count() == 2 and not h.can_redo() and h.redo_text() == ""
    h.undo()
    h.undo()
    h.undo()                                  # nothing left to undo: no change, no signal
    assert box == [0] and not h.can_undo() and h.undo_text() == ""
    assert changes == [1, 2, 3, 2, 1, 2, 1, 0]


def test_successive_merging_edits_are_one_step_and_a_new_key_starts_another():
    box, h = [0], UndoHistory()
    for n in (1, 1, 1):
        h.push(Add(box, n, key="drag-1"))
    h.push(Add(box, 5, key="drag-2"))
    assert box == [8] and h.count() == 2 and h.undo_text() == "add 5"
    h.undo()
    assert box == [3] and h.undo_text() == "add 3"
    h.undo()
    assert box == [0]
    h.redo()
    assert box == [3]


def test_a_macro_is_one_step_undone_in_reverse_and_nests():
    order, h = [], UndoHistory()

    class Log(Command):
        def __init__(self, name):
            super().__init__(name)

        def redo(self):
            order.append(f"do {self.text}")

        def undo(self):
            order.append(f"undo {self.text}")
    h.begin_macro("re-place entry")
    h.push(Log("a"))
    h.begin_macro("inner")
    h.push(Log("b"))
    h.end_macro()
    h.push(Log("c"))
    assert not h.can_undo()                    # inside a macro
    with pytest.raises(RuntimeError, match="inside a macro"):
        h.undo()
    h.end_macro()
    assert h.count() == 1 and h.undo_text() == "re-place entry"
    order.clear()
    h.undo()
    assert order == ["undo c", "undo b", "undo a"]
    h.redo()
    assert order[3:] == ["do a", "do b", "do c"]
    with pytest.raises(RuntimeError, match="end_macro without begin_macro"):
        h.end_macro()


def test_clear_forgets_everything():
    box, h = [0], UndoHistory()
    h.push(Add(box, 3))
    h.clear()
    assert h.count() == 0 and not h.can_undo() and not h.can_redo() and box == [3]

"""From plan to tool: trajectory -> robot pose, closed-loop correction from new shots or a
tracker, verification shots and their grade (room for it; nothing here yet).

May import: every other room of ``core`` except ``simulation``.
"""

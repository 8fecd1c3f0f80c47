"""The project's own files (``fluoronav.<kind>/<n>``): written atomically, validated on load.

May import: the standard library and numpy. Nothing else of ``core``: every room writes
and reads its files through here.
"""

"""The project's own files (``fluoronav.<kind>/<n>``): written atomically (``files``),
read and validated against their JSON Schema in ``resources/schemas`` (``schema``).

May import: the standard library, numpy and jsonschema. Nothing else of ``core``: every
room writes and reads its files through here.
"""

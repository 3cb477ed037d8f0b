"""The vocabulary every layer shares, depending on nothing else of the package.

``items`` (the item of work), ``target`` (where a request goes), ``failures`` (the failure of one
request, its kinds, the one model-FAILURE check), ``strict_json`` (JSON types, limits, the strict
reader and compact writer), ``certificates`` (the ``--ca-cert`` bundle). Protocols and transports
both build on these and never import each other.
"""

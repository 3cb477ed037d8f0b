"""Registers ``twistd seldon-batch``; the real module is imported only when the plugin is used.

Nothing heavy is imported here (no reactor, no treq, no jinja2): twistd imports every plugin
to list them, and importing the reactor here would break ``twistd --reactor``.
"""

from twisted.application.service import ServiceMaker

seldon_batch = ServiceMaker(
    "seldon-batch",
    "seldon_batch_tx.tap",
    "Send input files line by line to a Seldon Core model (one file, or a watch directory), with a live dashboard",
    "seldon-batch",
)

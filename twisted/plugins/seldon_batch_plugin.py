"""twistd plugin: ``twistd -n seldon-batch ...``. Imports nothing heavy; the real module loads on use."""

from twisted.application.service import ServiceMaker

seldonBatch = ServiceMaker(
    "seldon-batch",
    "seldon_batch_tx.tap",
    "Score files through a Seldon Core model: one batch, or a watch-directory daemon with a dashboard.",
    "seldon-batch",
)

"""Output files: ``writer`` writes them (locked, whole lines); ``lines`` is the one reader of an
output line (index, status, batch id) with the index bitmap and range text; ``resume``, ``verify``
and ``merge`` are built on it. A new output tool reads lines through :mod:`.lines` only."""

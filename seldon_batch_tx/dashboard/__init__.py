"""What a person watches: the web dashboard, Prometheus metrics, the batch registry, stderr progress.

``registry`` (the batches, written by the runners, read by the rest), ``security`` (who may ask,
what may leave), ``site`` (the routes and templates), ``listener`` (the site on an endpoint,
through ``strports.service``), ``metrics`` (/metrics text), ``progress`` (the command's stderr bar),
``figures`` (percentiles, charts, timing), ``downloads`` (a finished batch's files).
"""

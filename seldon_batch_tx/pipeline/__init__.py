"""One batch's pipeline, in the order a line passes through it.

``reader`` (input lines -> items) -> ``engine`` (units of work, the one-output-line guarantee,
writing and counting; ``ordering`` for ``--ordered``) -> ``attempts`` (one request until its final
answer: retries, backoff, the watchdog) ->
``summary`` (what a run reports, its exit status). ``stats`` holds the live counters, state and rate
samples everything else reads; ``batch`` runs one file end to end (lock, resume, engine, close).
``pacing`` (``--max-rate``, ``--adaptive``) admits each attempt: the load a shared model bears.
"""

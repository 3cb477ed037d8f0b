"""Exit statuses of every command (the batch processor, ``twistd seldon-batch``, ``verify``,
``merge``), defined once here so a tool and the daemon's summaries can never disagree.

They are documented in the README; a script that runs a batch and then ``verify`` reads one
table of codes.
"""

from __future__ import annotations

#: Every line has an output line and none is an error line (``verify``: the output is complete).
EXIT_OK = 0
#: Some lines failed or have no output line (``verify``: incomplete, or error lines;
#: ``merge``: the shard outputs do not add up); also a batch that could not run at all.
EXIT_FAILED_LINES = 1
#: The command line or a file it names is unusable; nothing was sent.
EXIT_USAGE = 2
#: The run stopped early (a signal, ``--max-failures``, an unwritable output); ``--resume`` finishes it.
EXIT_STOPPED = 3

#: The model could not be reached (or was not ready) before the first line; nothing was sent or written.
EXIT_UNREACHABLE = 4

__all__ = ["EXIT_FAILED_LINES", "EXIT_OK", "EXIT_STOPPED", "EXIT_UNREACHABLE", "EXIT_USAGE"]

"""The watch-directory daemon (``twistd seldon-batch --watch-dir DIR``): rules apart from the service.

* :mod:`.service`  WatchDirService: polls, the queue, launching and stopping batches
* :mod:`.renames`  inotify: files renamed into incoming/ are complete at once
* :mod:`.layout`   incoming/ processing/ done/ failed/, work-file names, free and short names, state files
* :mod:`.files`    opening, reading, moving and writing safely where anyone may write (no links followed)
* :mod:`.inputs`   what an input must look like: its name and its first bytes
* :mod:`.sidecars` what a sidecar ``NAME.json`` may set, and with whose leave
* :mod:`.claims`   claiming a file (lock, rename into processing/), taking up a left-over one, its settings
  and the credentials its log must hide
* :mod:`.filing`   filing a file to done/ with its summary or to failed/ with its reason
* :mod:`.turns`    fair turns: a file that ran ``--file-time-slice`` while others wait yields
* :mod:`.lock`     one daemon per watch directory

A new rule goes in the module that owns its question; the service changes only for a new trigger.
"""

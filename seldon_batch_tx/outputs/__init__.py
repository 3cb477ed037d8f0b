"""Output files: writing, reading back (resume, verify, merge)."""

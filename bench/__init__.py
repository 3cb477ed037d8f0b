"""bench/: the benchmark suite (run with `.venv/bin/python bench/run.py`)."""

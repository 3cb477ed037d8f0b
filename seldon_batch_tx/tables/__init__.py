"""Tables in and out: CSV and Parquet inputs read as rows of work, scored tables written back.

Optional (``pip install seldon-batch-tx[tables]``): nothing here is imported unless an input or an
output is a table. Readers yield the same :class:`~seldon_batch_tx.pipeline.reader.Item` the JSON-lines
reader yields, so the engine, resume, verify and ordering never know a table was read.
"""

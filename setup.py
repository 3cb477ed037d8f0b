from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="seldon-batch-tx",
    version="0.1.0",
    description="A Twisted batch processor for Seldon Core and Open Inference Protocol models",
    long_description=README.read_text() if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["seldon_batch_tx", "seldon_batch_tx.*"]) + ["twisted.plugins"],
    # The repository root as the package root: `pip install -e .` then adds it to sys.path with a .pth,
    # which Twisted's plugin finder needs to see twisted/plugins/seldon_batch_plugin.py (setuptools'
    # import-hook editable mode hides it from `twistd --help`).
    package_dir={"": "."},
    # The dashboard's templates and static files: web/ stays at the repository root, and the committed
    # symbolic link seldon_batch_tx/web -> ../web makes it package data (a wheel holds copies of the
    # files), loaded with jinja2's PackageLoader and importlib.resources. A package_dir entry mapping
    # seldon_batch_tx.web to web/ would instead push `pip install -e .` into the import-hook mode.
    package_data={"seldon_batch_tx": ["protos/*.proto", "protos/**/*.proto", "web/templates/*", "web/static/*"]},
    include_package_data=False,
    install_requires=[
        "twisted[tls]>=24.7",
        "treq>=24.9",
        "txaio>=23.1",
        "jinja2>=3.1",
        "grpcio>=1.85.1",
        "protobuf>=7.35.1,<8",
        "attrs>=23.1",
        "httptools>=0.6",
        "tqdm>=4.66",  # the progress bar on a terminal
        "orjson>=3.9",  # strict_json reads lines and answers about 4x quicker (json for the rest)
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-twisted>=1.14", "ruff>=0.6", "mypy>=1.10", "mypy-zope>=1.0", "grpcio-tools>=1.60",
                "pyyaml>=6", "cryptography>=42", "kubernetes-validate>=1.29",
                "prometheus-client>=0.20", "selenium>=4.20",  # /metrics parser and the browser test
                "hypothesis>=6.100",
                "fsspec>=2024.2", "s3fs>=2024.2", "moto[server]>=5",  # object storage and its loopback S3
                "pyarrow>=14"],  # tables (CSV and Parquet)
        "s3": ["fsspec>=2024.2", "s3fs>=2024.2"],
        "tables": ["pyarrow>=14"],
    },
    entry_points={
        "console_scripts": [
            "seldon-batch-processor=seldon_batch_tx.cli:main",
            "seldon-batch=seldon_batch_tx.tools:main",
        ],
    },
)

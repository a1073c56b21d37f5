"""Dataset registry. Importing this package registers the built-in datasets."""

from tasks.datasets import (  # noqa: F401
    aid,
    domars16k,
    hirise,
    marsbench,  # registers the marsbench: prefix
)
from tasks.datasets.base import (  # noqa: F401
    DATASETS,
    DatasetSpec,
    ImageTable,
    dataset_names,
    dataset_spec,
    register_dataset,
    table_from_rows,
)
from tasks.datasets.generic import load_dataset  # noqa: F401

"""segone: a segmentation compute engine for customer data.

Events (Arrow / Parquet / Dask) -> one profile per customer -> scored
features -> mini-batch k-means segments -> assignment, labels, personas.
"""

__version__ = "0.1.0"

from segone import errors
from segone._backend import available_backends
from segone.assign import Assignment, assign

__all__ = ["Assignment", "assign", "available_backends", "errors", "__version__"]

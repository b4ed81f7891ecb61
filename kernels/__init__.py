"""Compute kernels for segone.

Three implementations of every kernel family share one signature:

* ``segone.kernels._cy``      Cython (``kernels/_cy.pyx``), OpenMP threads.
* ``segone.kernels._nb``      Numba (``@njit(nogil=True, parallel=True)``).
* ``segone.kernels.reference`` plain NumPy: slow and obvious, the test oracle.

The functions here assume validated input (C-contiguous, matching float
dtypes, caller-allocated outputs).  Public entry points in ``segone`` do the
validation and choose the backend (see :mod:`segone._backend`).
"""

"""Compute kernels for segone.

Three implementations of every kernel family share one signature:

* ``segone.kernels._cy``      Cython (``kernels/_cy.pyx``), OpenMP threads.
* ``segone.kernels._nb``      Numba (``@njit(nogil=True, parallel=True)``).
* ``segone.kernels.reference`` plain NumPy: slow and obvious, the test oracle.

The functions here assume validated input (C-contiguous, matching float
dtypes, caller-allocated outputs).  Public entry points in ``segone`` do the
validation and choose the backend (see :mod:`segone._backend`).

The distance kernels (assign, partial_sums, minibatch) are exact to the input
precision of the data's spread wherever the data sit: rows and centroids are
centred on the fly (``_common.centering``), and finite rows whose squared
distance exceeds the float type raise :class:`segone.errors.DataError`.
"""

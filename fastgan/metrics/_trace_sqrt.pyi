"""Tr sqrt(S1 S2) in float64 via LAPACK (csrc/trace_sqrt.cpp). Inputs are converted to
C-contiguous float64; the GIL is released while LAPACK runs."""

from numpy.typing import ArrayLike

def trace_sqrt_product(s1: ArrayLike, s2: ArrayLike, method: str = "auto") -> float:
    """S1, S2: symmetric PSD (d, d). Cholesky of S1 and eigenvalues of L^T S2 L; ``method="eig"``
    (or a singular S1) uses the eigenvalues of sqrt(S1) S2 sqrt(S1)."""

def trace_sqrt_lowrank(a: ArrayLike, s2: ArrayLike) -> float:
    """Tr sqrt(A^T A S2) from the eigenvalues of the (n, n) matrix A S2 A^T; a: (n, d)."""

def trace_sqrt_cross(a: ArrayLike, b: ArrayLike) -> float:
    """Tr sqrt(A^T A B^T B): the nuclear norm of A B^T; a: (n1, d), b: (n2, d)."""


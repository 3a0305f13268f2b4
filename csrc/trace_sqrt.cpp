// Tr sqrt(S1 S2) for the Frechet distance, in float64 with LAPACK.
//
// S1 S2 is not symmetric, so sqrtm of it is slow and fragile. Its eigenvalues are
// those of a symmetric matrix instead: L^T S2 L with S1 = L L^T (Cholesky), or
// sqrt(S1) S2 sqrt(S1) when S1 is singular, or, when the statistics come from
// n < d samples, the n x n matrices A S2 A^T or (A B^T)(A B^T)^T where A, B are the
// centred, 1/sqrt(n-1)-scaled features (S1 = A^T A). The trace of the square root is
// the sum of the square roots of those eigenvalues (tiny negative ones clamp to 0).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Fortran LAPACK/BLAS; the trailing size_t are gfortran's hidden string lengths.
extern "C" {
void dpotrf_(const char*, const int*, double*, const int*, int*, size_t);
void dsygst_(const int*, const char*, const int*, double*, const int*, const double*, const int*, int*, size_t);
void dsyevd_(const char*, const char*, const int*, double*, const int*, double*, double*, const int*, int*,
             const int*, int*, size_t, size_t);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*, size_t, size_t);
void dsymm_(const char*, const char*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*, size_t, size_t);
void dsyrk_(const char*, const char*, const int*, const int*, const double*, const double*, const int*,
            const double*, double*, const int*, size_t, size_t);
}

namespace {

// Eigenvalues (ascending) of the symmetric n x n matrix in `a` (lower triangle used; overwritten).
// With `vectors`, `a` holds the eigenvectors afterwards.
std::vector<double> eigh(std::vector<double>& a, int n, bool vectors) {
    std::vector<double> w(n);
    const char jobz = vectors ? 'V' : 'N';
    int info = 0, lwork = -1, liwork = -1, iwork_q = 0;
    double work_q = 0;
    dsyevd_(&jobz, "L", &n, a.data(), &n, w.data(), &work_q, &lwork, &iwork_q, &liwork, &info, 1, 1);
    lwork = static_cast<int>(work_q);
    liwork = iwork_q;
    std::vector<double> work(std::max(lwork, 1));
    std::vector<int> iwork(std::max(liwork, 1));
    dsyevd_(&jobz, "L", &n, a.data(), &n, w.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
    if (info != 0) throw std::runtime_error("dsyevd failed to converge (info " + std::to_string(info) + ")");
    return w;
}

// Sum of square roots of the eigenvalues; those below the rank tolerance (n eps max) are rounding
// noise of exact zeros (rank-deficient statistics) and count as 0.
double sum_sqrt(const std::vector<double>& w) {
    if (w.empty()) return 0.0;
    const double tol = w.size() * std::numeric_limits<double>::epsilon() * std::max(std::fabs(w.front()), std::fabs(w.back()));
    double s = 0;
    for (double v : w) s += v > tol ? std::sqrt(v) : 0.0;
    return s;
}

std::vector<double> copy_of(const Array& x) { return std::vector<double>(x.data(), x.data() + x.size()); }

void check_square(const Array& s, const char* name) {
    if (s.ndim() != 2 || s.shape(0) != s.shape(1))
        throw std::invalid_argument(std::string(name) + " must be a square matrix");
}

// Eigenvalues of sqrt(S1) S2 sqrt(S1) = those of W^T S2 W with W = V diag(sqrt(w)) (S1 = V diag(w) V^T):
// works for singular S1. Eigenvalues of S1 below its rank tolerance are noise and count as 0, so
// their columns drop out and C is only rank x rank.
double eig_form(std::vector<double> s1, const std::vector<double>& s2, int d) {
    std::vector<double> w = eigh(s1, d, true);  // s1 now holds V (column-major)
    const double tol = d * std::numeric_limits<double>::epsilon() * std::max(std::fabs(w.front()), std::fabs(w.back()));
    int r = 0;  // ascending order: the kept columns are the last r
    for (double v : w) r += v > tol;
    if (r == 0) return 0.0;
    double* wcols = s1.data() + static_cast<size_t>(d - r) * d;
    for (int j = 0; j < r; ++j) {
        const double f = std::sqrt(w[d - r + j]);
        for (int i = 0; i < d; ++i) wcols[static_cast<size_t>(j) * d + i] *= f;
    }
    std::vector<double> t(static_cast<size_t>(d) * r), c(static_cast<size_t>(r) * r);
    const double one = 1.0, zero = 0.0;
    dsymm_("L", "L", &d, &r, &one, s2.data(), &d, wcols, &d, &zero, t.data(), &d, 1, 1);  // S2 W
    dgemm_("T", "N", &r, &r, &d, &one, wcols, &d, t.data(), &d, &zero, c.data(), &r, 1, 1);  // W^T S2 W
    return sum_sqrt(eigh(c, r, false));
}

double trace_sqrt_product(const Array& s1_in, const Array& s2_in, const std::string& method) {
    check_square(s1_in, "s1");
    check_square(s2_in, "s2");
    if (s1_in.shape(0) != s2_in.shape(0)) throw std::invalid_argument("s1 and s2 differ in size");
    if (method != "auto" && method != "eig") throw std::invalid_argument("method must be 'auto' or 'eig'");
    const int d = static_cast<int>(s1_in.shape(0));
    std::vector<double> s1 = copy_of(s1_in), s2 = copy_of(s2_in);
    py::gil_scoped_release release;
    if (method == "auto") {
        std::vector<double> l = s1;
        int info = 0;
        dpotrf_("L", &d, l.data(), &d, &info, 1);
        if (info == 0) {
            const int itype = 2;  // s2 <- L^T S2 L
            dsygst_(&itype, "L", &d, s2.data(), &d, l.data(), &d, &info, 1);
            if (info != 0) throw std::runtime_error("dsygst failed (info " + std::to_string(info) + ")");
            return sum_sqrt(eigh(s2, d, false));
        }
    }
    return eig_form(std::move(s1), s2, d);  // S1 singular (or asked for)
}

// A is n x d row-major, i.e. A^T column-major with leading dimension d.
double trace_sqrt_lowrank(const Array& a_in, const Array& s2_in) {
    check_square(s2_in, "s2");
    if (a_in.ndim() != 2 || a_in.shape(1) != s2_in.shape(0))
        throw std::invalid_argument("a must be (n, d) with d the size of s2");
    const int n = static_cast<int>(a_in.shape(0)), d = static_cast<int>(a_in.shape(1));
    std::vector<double> t(static_cast<size_t>(d) * n), c(static_cast<size_t>(n) * n);
    py::gil_scoped_release release;
    const double one = 1.0, zero = 0.0;
    dsymm_("L", "L", &d, &n, &one, s2_in.data(), &d, a_in.data(), &d, &zero, t.data(), &d, 1, 1);  // S2 A^T
    dgemm_("T", "N", &n, &n, &d, &one, a_in.data(), &d, t.data(), &d, &zero, c.data(), &n, 1, 1);  // A S2 A^T
    return sum_sqrt(eigh(c, n, false));
}

double trace_sqrt_cross(const Array& a_in, const Array& b_in) {
    if (a_in.ndim() != 2 || b_in.ndim() != 2 || a_in.shape(1) != b_in.shape(1))
        throw std::invalid_argument("a and b must be (n1, d) and (n2, d)");
    const int n1 = static_cast<int>(a_in.shape(0)), n2 = static_cast<int>(b_in.shape(0));
    const int d = static_cast<int>(a_in.shape(1));
    std::vector<double> m(static_cast<size_t>(n1) * n2);
    py::gil_scoped_release release;
    const double one = 1.0, zero = 0.0;
    dgemm_("T", "N", &n1, &n2, &d, &one, a_in.data(), &d, b_in.data(), &d, &zero, m.data(), &n1, 1, 1);  // A B^T
    const int k = std::min(n1, n2);  // Gram matrix on the smaller side: same non-zero eigenvalues
    std::vector<double> c(static_cast<size_t>(k) * k);
    dsyrk_("L", n1 <= n2 ? "N" : "T", &k, n1 <= n2 ? &n2 : &n1, &one, m.data(), &n1, &zero, c.data(), &k, 1, 1);
    return sum_sqrt(eigh(c, k, false));
}

}  // namespace

PYBIND11_MODULE(_trace_sqrt, m) {
    m.doc() = "Tr sqrt(S1 S2) in float64 via LAPACK (Cholesky / symmetric eigenvalues).";
    m.def("trace_sqrt_product", &trace_sqrt_product, py::arg("s1"), py::arg("s2"), py::arg("method") = "auto",
          "Tr sqrt(S1 S2) for symmetric PSD S1, S2: Cholesky of S1 and eigenvalues of L^T S2 L; "
          "method='eig' (or a singular S1) uses sqrt(S1) S2 sqrt(S1) from S1's eigendecomposition.");
    m.def("trace_sqrt_lowrank", &trace_sqrt_lowrank, py::arg("a"), py::arg("s2"),
          "Tr sqrt(A^T A S2) from the n x n matrix A S2 A^T (A: (n, d)).");
    m.def("trace_sqrt_cross", &trace_sqrt_cross, py::arg("a"), py::arg("b"),
          "Tr sqrt(A^T A B^T B): the nuclear norm of A B^T, from its smaller Gram matrix.");
}

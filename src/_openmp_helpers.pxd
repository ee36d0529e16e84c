# The one place the CPU kernels touch OpenMP.  Each call has a serial fallback,
# so cpu_kernels.pyx also builds (single-threaded) without OpenMP.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define XK_OPENMP_ENABLED 1
    static inline int xk_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define XK_OPENMP_ENABLED 0
    static inline int xk_omp_max_threads(void) { return 1; }
    #endif
    """
    const int XK_OPENMP_ENABLED
    int xk_omp_max_threads() noexcept nogil

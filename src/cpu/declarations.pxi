# The C kernels (src/cpu_kernels.h) and the floating types the module is specialised for.

cdef extern from "cpu_kernels.h" nogil:
    enum:
        XK_NACC
        XK_DOT_ROWS
        XK_TILE_F32
        XK_TILE_F64
        XK_VBLOCK
        XK_SHARE
        XK_SACC
        XK_TAP_ROWS
        XK_TAP_OUTS
        XK_LANES_F32
        XK_LANES_F64

    ctypedef struct xk_image_t:
        int64_t img, chan, row, col, height, width
    ctypedef struct xk_layout_t:
        int64_t hb, wb, len
    ctypedef struct xk_frame_t:
        int64_t step_y, step_x, off_y, off_x
    ctypedef struct xk_scatter_t:
        int64_t origin, img, row, col, r_lo, r_hi, c_lo, c_hi
    ctypedef struct xk_quads_t:
        const int32_t *off
        const int64_t *ptr
        const int64_t *rows
        int64_t degree, n_dst, n_src, shared

    void xk_pack_f32(float *dst, const float *src, int64_t n_img, const xk_image_t *im,
                     const xk_layout_t *lay, const xk_frame_t *fr)
    void xk_pack_f64(double *dst, const double *src, int64_t n_img, const xk_image_t *im,
                     const xk_layout_t *lay, const xk_frame_t *fr)
    void xk_interleave4_f32(const float *w, int64_t n_out, int64_t per, float *o)
    void xk_interleave4_f64(const double *w, int64_t n_out, int64_t per, double *o)
    void xk_corr_tiles_f32(const float *src, int64_t cstride, int64_t p0, int64_t nvec,
                           const int64_t *ptr, int64_t n_cb, const int64_t *chan, const int64_t *wrow,
                           const float *w, int64_t wstride, int64_t shared, const int64_t *toff, int64_t ntap,
                           int64_t rows3, int64_t a3,
                           const float *bias, int64_t nd, float *dst, int64_t dst_stride,
                           int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_corr_tiles_f64(const double *src, int64_t cstride, int64_t p0, int64_t nvec,
                           const int64_t *ptr, int64_t n_cb, const int64_t *chan, const int64_t *wrow,
                           const double *w, int64_t wstride, int64_t shared, const int64_t *toff, int64_t ntap,
                           int64_t rows3, int64_t a3,
                           const double *bias, int64_t nd, double *dst, int64_t dst_stride,
                           int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_dot_taps_f32(float *out, const float *g, const float *x, int64_t cstride, const int64_t *chan,
                         int64_t degree, const float *mk, const int64_t *toff, int64_t ntap, int64_t n)
    void xk_dot_taps_f64(double *out, const double *g, const double *x, int64_t cstride, const int64_t *chan,
                         int64_t degree, const double *mk, const int64_t *toff, int64_t ntap, int64_t n)
    void xk_spread_tile_f32(const float *src, int64_t cstride, int64_t p0, const int64_t *chan, const float *w,
                            int64_t n_runs, int64_t degree, int64_t n_dst, float *part, float *dst,
                            int64_t dst_stride, int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_spread_tile_f64(const double *src, int64_t cstride, int64_t p0, const int64_t *chan, const double *w,
                            int64_t n_runs, int64_t degree, int64_t n_dst, double *part, double *dst,
                            int64_t dst_stride, int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_quad_tile_f32(const float *src, int64_t cstride, int64_t p0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const float *qw, const float *bias, float *panel, float *part, float *dst,
                          int64_t dst_stride, int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_quad_tile_f64(const double *src, int64_t cstride, int64_t p0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const double *qw, const double *bias, double *panel, double *part,
                          double *dst, int64_t dst_stride, int64_t n_img, const xk_layout_t *lay,
                          const xk_scatter_t *sc)
    void xk_quad_tile_direct_f32(const float *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                 int64_t p0, const xk_quads_t *qs, int64_t q_lo, int64_t q_hi, const float *qw,
                                 const float *bias, float *panel, float *part, float *dst, int64_t dst_img,
                                 int64_t dst_chan)
    void xk_quad_tile_direct_f64(const double *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                 int64_t p0, const xk_quads_t *qs, int64_t q_lo, int64_t q_hi, const double *qw,
                                 const double *bias, double *panel, double *part, double *dst, int64_t dst_img,
                                 int64_t dst_chan)
    void xk_im2col_f32(float *col, int64_t p_pad, const float *x, const xk_image_t *im, int64_t n_img, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                       int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_im2col_f64(double *col, int64_t p_pad, const double *x, const xk_image_t *im, int64_t n_img,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                       int64_t dw, int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_im2col_table_f32(float *col, int64_t p_pad, const float *x, int64_t chan, int64_t img, int64_t n_img,
                             const int64_t *offs, int64_t hw, int64_t kk, int64_t u0, int64_t u1)
    void xk_im2col_table_f64(double *col, int64_t p_pad, const double *x, int64_t chan, int64_t img, int64_t n_img,
                             const int64_t *offs, int64_t hw, int64_t kk, int64_t u0, int64_t u1)
    void xk_col2im_f32(float *gx, const xk_image_t *im, const float *gcol, int64_t p_pad, int64_t n_img, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                       int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_col2im_f64(double *gx, const xk_image_t *im, const double *gcol, int64_t p_pad, int64_t n_img,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                       int64_t dw, int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_dot_columns_f32(float *gw, const float *g, int64_t gstride, const float *col, int64_t cstride,
                            const int64_t *rows, const int64_t *wpos, const int64_t *ptr, int64_t nb, int64_t n_dst,
                            int64_t v_lo, int64_t v_hi, int64_t p0, int64_t n, int64_t block_rows, int64_t n_src,
                            float *panel)
    void xk_dot_columns_f64(double *gw, const double *g, int64_t gstride, const double *col, int64_t cstride,
                            const int64_t *rows, const int64_t *wpos, const int64_t *ptr, int64_t nb, int64_t n_dst,
                            int64_t v_lo, int64_t v_hi, int64_t p0, int64_t n, int64_t block_rows, int64_t n_src,
                            double *panel)
    void xk_dot_columns_taps_f32(float *gw, const float *g, int64_t gstride, const float *col, int64_t cstride,
                                 int64_t kk, const int64_t *gptr, const int64_t *sv, const int64_t *sw,
                                 int64_t u_lo, int64_t u_hi, int64_t p0, int64_t n)
    void xk_dot_columns_taps_f64(double *gw, const double *g, int64_t gstride, const double *col, int64_t cstride,
                                 int64_t kk, const int64_t *gptr, const int64_t *sv, const int64_t *sw,
                                 int64_t u_lo, int64_t u_hi, int64_t p0, int64_t n)
    void xk_quad_columns_f32(const float *x, int64_t xstride, int64_t p, const int32_t *off, const float *qw,
                             const int64_t *ptr, const int64_t *row0, int64_t nb, int64_t n_dst, const float *bias,
                             float *panel, float *y, int64_t ystride, int64_t q_lo, int64_t q_hi)
    void xk_quad_columns_f64(const double *x, int64_t xstride, int64_t p, const int32_t *off, const double *qw,
                             const int64_t *ptr, const int64_t *row0, int64_t nb, int64_t n_dst, const double *bias,
                             double *panel, double *y, int64_t ystride, int64_t q_lo, int64_t q_hi)
    void xk_spread_tile_direct_f32(const float *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                   int64_t p0, const int64_t *chan, const float *w, int64_t n_runs, int64_t degree,
                                   int64_t n_dst, float *panel, float *part, float *dst, int64_t dst_img,
                                   int64_t dst_chan)
    void xk_spread_tile_direct_f64(const double *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                   int64_t p0, const int64_t *chan, const double *w, int64_t n_runs, int64_t degree,
                                   int64_t n_dst, double *panel, double *part, double *dst, int64_t dst_img,
                                   int64_t dst_chan)
    void xk_dot_taps_shared_f32(float *out, const float *g, int64_t gstride, const float *x, int64_t cstride,
                                const int64_t *chan, int64_t degree, const float *mk, const int64_t *toff,
                                int64_t ntap, int64_t n)
    void xk_dot_taps_shared_f64(double *out, const double *g, int64_t gstride, const double *x, int64_t cstride,
                                const int64_t *chan, int64_t degree, const double *mk, const int64_t *toff,
                                int64_t ntap, int64_t n)
    void xk_dot_rows3_f32(float *out, const float *g, const float *x, int64_t wb, int64_t cols, int64_t n_rows)
    void xk_dot_rows3_f64(double *out, const double *g, const double *x, int64_t wb, int64_t cols,
                          int64_t n_rows)
    void xk_wino_weights_f32(float *uw, const float *w, const int64_t *edges, int64_t n, int64_t n_edges,
                             int flip, int m, int64_t j_lo,
                             int64_t j_hi)
    void xk_wino_weights_f64(double *uw, const double *w, const int64_t *edges, int64_t n, int64_t n_edges,
                             int flip, int m, int64_t j_lo,
                             int64_t j_hi)
    void xk_wino_tile_f32(const float *src, const xk_image_t *sim, int64_t n_img, int64_t th, int64_t tw,
                          int64_t pad_y, int64_t pad_x, int64_t q0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const float *uw, int64_t ustride, const float *bias, float *panel,
                          float *part, float *dst, const xk_image_t *dim, int m)
    void xk_wino_tile_f64(const double *src, const xk_image_t *sim, int64_t n_img, int64_t th, int64_t tw,
                          int64_t pad_y, int64_t pad_x, int64_t q0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const double *uw, int64_t ustride, const double *bias, double *panel,
                          double *part, double *dst, const xk_image_t *dim, int m)
    void xk_wino_wgrad_tile_f32(const float *x, const xk_image_t *xim, const float *g, const xk_image_t *gim,
                                int64_t n_img, int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                int64_t n_src, const int64_t *index, int64_t degree, int64_t n_dst,
                                int shared, float *vbuf, float *acc, int m)
    void xk_wino_wgrad_tile_f64(const double *x, const xk_image_t *xim, const double *g, const xk_image_t *gim,
                                int64_t n_img, int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                int64_t n_src, const int64_t *index, int64_t degree, int64_t n_dst,
                                int shared, double *vbuf, double *acc, int m)
    void xk_wino_wgrad_finish_f32(float *grad_w, const float *acc, int64_t n_edges, int m)
    void xk_wino_wgrad_finish_f64(double *grad_w, const double *acc, int64_t n_edges, int m)
    int xk_all_finite_f32(const float *x, int64_t n)
    int xk_all_finite_f64(const double *x, int64_t n)
    void xk_valid_mask_f32(float *mk, int64_t n, int64_t n_img, const xk_layout_t *lay, int64_t rows, int64_t cols)
    void xk_valid_mask_f64(double *mk, int64_t n, int64_t n_img, const xk_layout_t *lay, int64_t rows, int64_t cols)
    void xk_pack_points_f32(float *dst, int64_t cstride, const float *src, int64_t n_chan, int64_t n_img,
                            const xk_image_t *im, int64_t len)
    void xk_pack_points_f64(double *dst, int64_t cstride, const double *src, int64_t n_chan, int64_t n_img,
                            const xk_image_t *im, int64_t len)
    float xk_sum_image_f32(const float *src, int64_t n_img, const xk_image_t *im)
    double xk_sum_image_f64(const double *src, int64_t n_img, const xk_image_t *im)


ctypedef fused floating:
    float
    double

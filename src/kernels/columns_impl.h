/* The columns path: image columns (im2col), their adjoint, and quads over them.
 * One element type per inclusion (src/cpu_kernels_impl.h): no include guard on purpose. */

/* The outputs c0 <= c < c1 of a row of wo whose tap kx reads inside an image row of width
 * w: c * sw + kx * dw - pw in [0, w). */
XK_INLINE void XK_FN(xk_tap_cols)(int64_t w, int64_t wo, int64_t kx, int64_t sw, int64_t pw, int64_t dw,
                                  int64_t *c0, int64_t *c1)
{
    const int64_t lo = pw - kx * dw, hi = w - 1 + pw - kx * dw;
    *c0 = lo <= 0 ? 0 : (lo + sw - 1) / sw;
    *c1 = hi < 0 ? 0 : (hi / sw + 1 < wo ? hi / sw + 1 : wo);
}

/* The image columns of channels u0 <= u < u1 of x (n_img images of im): row u * kh * kw + t
 * (tap t = ky * kw + kx) of col (rows of p_pad) holds x[b, u, y * sh + ky * dh - ph,
 * c * sw + kx * dw - pw] (0 outside the image) at position (b * ho + y) * wo + c, and 0 at
 * positions n_img * ho * wo <= p < p_pad. */
XK_CLONES static void XK_FN(xk_im2col)(XK_T *XK_RESTRICT col, int64_t p_pad, const XK_T *XK_RESTRICT x,
                                       const xk_image_t *im, int64_t n_img, int64_t kh, int64_t kw, int64_t sh,
                                       int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t ho,
                                       int64_t wo, int64_t u0, int64_t u1)
{
    for (int64_t u = u0; u < u1; u++)
        for (int64_t ky = 0; ky < kh; ky++)
            for (int64_t kx = 0; kx < kw; kx++) {
                XK_T *d = col + ((u * kh + ky) * kw + kx) * p_pad;
                int64_t c0, c1;  /* the outputs whose tap reads inside the row */
                XK_FN(xk_tap_cols)(im->width, wo, kx, sw, pw, dw, &c0, &c1);
                for (int64_t b = 0; b < n_img; b++)
                    for (int64_t y = 0; y < ho; y++, d += wo) {
                        const int64_t iy = y * sh + ky * dh - ph;
                        if (iy < 0 || iy >= im->height || c0 >= c1) {
                            for (int64_t c = 0; c < wo; c++) d[c] = 0;
                            continue;
                        }
                        const XK_T *s = x + b * im->img + u * im->chan + iy * im->row;
                        const int64_t shift = kx * dw - pw;
                        for (int64_t c = 0; c < c0; c++) d[c] = 0;
                        if (sw == 1 && im->col == 1 && c1 - c0 >= 32)
                            memcpy(d + c0, s + c0 + shift, (size_t)(c1 - c0) * sizeof(XK_T));
                        else if (sw == 2 && im->col == 1)  /* every other element, no column stride */
                            for (int64_t c = c0; c < c1; c++) d[c] = s[2 * c + shift];
                        else
                            for (int64_t c = c0; c < c1; c++) d[c] = s[(c * sw + shift) * im->col];
                        for (int64_t c = c1; c < wo; c++) d[c] = 0;
                    }
                for (int64_t p = n_img * ho * wo; p < p_pad; p++, d++) *d = 0;
            }
}

/* xk_im2col by an offset table, for maps of short rows (where a row's few elements cost less
 * than its bounds): row u * kk + t of col = x's channel u (chan apart; images img apart) at
 * offs[t * hw + q] for position q of each of the n_img images (-1: outside the image, 0),
 * then 0 up to p_pad; channels u0 <= u < u1. */
static void XK_FN(xk_im2col_table)(XK_T *XK_RESTRICT col, int64_t p_pad, const XK_T *XK_RESTRICT x, int64_t chan,
                                   int64_t img, int64_t n_img, const int64_t *offs, int64_t hw, int64_t kk,
                                   int64_t u0, int64_t u1)
{
    for (int64_t u = u0; u < u1; u++)
        for (int64_t t = 0; t < kk; t++) {
            XK_T *d = col + (u * kk + t) * p_pad;
            const int64_t *o = offs + t * hw;
            for (int64_t b = 0; b < n_img; b++, d += hw) {
                const XK_T *xb = x + b * img + u * chan;
                for (int64_t q = 0; q < hw; q++) {
                    const int64_t k = o[q];
                    const XK_T v = xb[k < 0 ? 0 : k];
                    d[q] = k < 0 ? (XK_T)0 : v;
                }
            }
            for (int64_t p = n_img * hw; p < p_pad; p++) col[(u * kk + t) * p_pad + p] = 0;
        }
}

/* The adjoint of xk_im2col for channels u0 <= u < u1: grad_x[b, u] (n_img images of im) =
 * the sum, taps in order, of gcol's entries at the positions that read each pixel.  One
 * image's plane at a time, so that it stays in L1 while its taps add to it. */
XK_CLONES static void XK_FN(xk_col2im)(XK_T *XK_RESTRICT gx, const xk_image_t *im, const XK_T *XK_RESTRICT gcol,
                                       int64_t p_pad, int64_t n_img, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                       int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t ho, int64_t wo,
                                       int64_t u0, int64_t u1)
{
    const int64_t rs = im->row, cs = im->col;
    for (int64_t u = u0; u < u1; u++)
        for (int64_t b = 0; b < n_img; b++) {
            XK_T *plane = gx + b * im->img + u * im->chan;
            for (int64_t iy = 0; iy < im->height; iy++)
                for (int64_t ix = 0; ix < im->width; ix++) plane[iy * rs + ix * cs] = 0;
            for (int64_t ky = 0; ky < kh; ky++)
                for (int64_t kx = 0; kx < kw; kx++) {
                    const XK_T *g = gcol + ((u * kh + ky) * kw + kx) * p_pad + b * ho * wo;
                    const int64_t shift = kx * dw - pw;
                    int64_t c0, c1;
                    XK_FN(xk_tap_cols)(im->width, wo, kx, sw, pw, dw, &c0, &c1);
                    for (int64_t y = 0; y < ho; y++, g += wo) {
                        const int64_t iy = y * sh + ky * dh - ph;
                        if (iy < 0 || iy >= im->height) continue;
                        XK_T *d = plane + iy * rs;
                        if (cs == 1 && sw == 1)
                            for (int64_t c = c0; c < c1; c++) d[c + shift] += g[c];
                        else
                            for (int64_t c = c0; c < c1; c++) d[(c * sw + shift) * cs] += g[c];
                    }
                }
        }
}

/* The columns path (im2col, then 1x1 quads): y rows (n_dst of ystride) at positions
 * [p, p + XK_SACC * XK_VL) = bias + the quads' sums over source rows x (n_src of xstride;
 * a source row is one (channel, tap) of the image columns).  The source rows come in nb
 * blocks [row0[b], row0[b + 1]), each copied into panel ((rows + 1) * XK_SACC * XK_VL
 * scratch, a zero row last) once and read by every quad q_lo <= q < q_hi while it stays
 * in L1: hundreds of rows of taps would not.  Quad q's terms in block b are
 * [ptr[b * (n_quads + 1) + q], ptr[b * (n_quads + 1) + q + 1]) of off (panel offsets
 * within the block) and qw; the sums of block b > 0 add to y. */
XK_CLONES static void XK_FN(xk_quad_columns)(const XK_T *XK_RESTRICT x, int64_t xstride, int64_t p,
                                             const int32_t *off, const XK_T *qw, const int64_t *ptr,
                                             const int64_t *row0, int64_t nb, int64_t n_dst, const XK_T *bias,
                                             XK_T *panel, XK_T *y, int64_t ystride, int64_t q_lo, int64_t q_hi)
{
    const int64_t width = XK_SACC * XK_VL, n_quads = (n_dst + 3) / 4;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t rows = row0[b + 1] - row0[b];
        XK_FN(xk_panel_copy)(panel, x + row0[b] * xstride + p, xstride, rows);
        XK_UNROLL for (int a = 0; a < XK_SACC; a++)
            XK_VSTORE(XK_V, panel + rows * width + a * XK_VL, XK_VSPLAT(XK_V, (XK_T)0));
        const xk_quads_t qs = {off, ptr + b * (n_quads + 1), NULL, 0, n_dst, rows, 0};
        XK_FN(xk_quad_panel_impl)(y + p, ystride, panel, &qs, qw, bias, q_lo, q_hi, b > 0, XK_SACC);
    }
}

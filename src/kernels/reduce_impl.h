/* Whole-array checks and sums: non-finite detection, valid-position masks, bias gradients.
 * One element type per inclusion (src/cpu_kernels_impl.h): no include guard on purpose. */

/* 1 when x[0, n) holds no Inf or NaN: then x * 0 is 0 everywhere. */
XK_CLONES static int XK_FN(xk_all_finite)(const XK_T *x, int64_t n)
{
    XK_V acc = XK_VSPLAT(XK_V, (XK_T)0);
    XK_T tail = 0, lanes[XK_VL];
    int64_t p = 0;
    for (; p + XK_VL <= n; p += XK_VL) acc += XK_VLOAD(XK_V, x + p) * (XK_T)0;
    for (; p < n; p++) tail += x[p] * (XK_T)0;
    XK_VSTORE(XK_V, lanes, acc);
    for (int l = 0; l < XK_VL; l++) tail += lanes[l];
    return tail == 0;
}

/* mk[p] for p < n: all bits set where grid position p of n_img images of
 * lay->hb x lay->wb is an output (row < rows, column < cols), all bits zero elsewhere. */
static void XK_FN(xk_valid_mask)(XK_T *mk, int64_t n, int64_t n_img, const xk_layout_t *lay,
                                 int64_t rows, int64_t cols)
{
    const int64_t plane = lay->hb * lay->wb;
    XK_T set, clear = 0;
    memset(&set, 0xff, sizeof set);
    for (int64_t p = 0; p < n; p++) {
        const int64_t q = p % plane;
        const int valid = p < n_img * plane && q / lay->wb < rows && q % lay->wb < cols;
        memcpy(mk + p, valid ? &set : &clear, sizeof(XK_T));
    }
}

/* Sum of n_img images of one channel, rows in order, each row by 2 * XK_VL
 * vector partial sums reduced in a fixed order. */
XK_CLONES static XK_T XK_FN(xk_sum_image)(const XK_T *src, int64_t n_img, const xk_image_t *im)
{
    int64_t height = im->height, width = im->width;
    XK_T total = 0;
    if (im->col == 1 && im->row == width) {  /* contiguous plane: one long row */
        width *= height;
        height = 1;
    }
    for (int64_t g = 0; g < n_img; g++) {
        for (int64_t y = 0; y < height; y++) {
            const XK_T *s = src + g * im->img + y * im->row;
            XK_T sum = 0;
            int64_t x = 0;
            if (im->col == 1) {
                XK_V acc0 = XK_VSPLAT(XK_V, (XK_T)0), acc1 = acc0;
                XK_T lanes[2 * XK_VL];
                for (; x + 2 * XK_VL <= width; x += 2 * XK_VL) {
                    acc0 += XK_VLOAD(XK_V, s + x);
                    acc1 += XK_VLOAD(XK_V, s + x + XK_VL);
                }
                XK_VSTORE(XK_V, lanes, acc0);
                XK_VSTORE(XK_V, lanes + XK_VL, acc1);
                for (int l = 0; l < 2 * XK_VL; l++) sum += lanes[l];
            }
            for (; x < width; x++) sum += s[x * im->col];
            total += sum;
        }
    }
    return total;
}

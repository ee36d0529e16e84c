# ---------------------------------------------------------------- X-Conv: the columns path

def _columns(kernel, stride, int64_t n_in, out_hw, int64_t batch, int64_t itemsize, bint forward):
    """True when a forward (or a grad_input) runs by the columns path (COLUMNS; Winograd was
    not taken): the grad_input of strided convs; the forward of strided k x k convs into maps
    of at most COLUMNS_MAX_STRIDED_HW outputs (a strided 1x1's polyphase plane is its
    columns already; the rule's sizes are those measured faster); both directions of k x k
    convs on maps of at most COLUMNS_MAX_HW outputs (not stride-1 1x1 convs, whose columns
    are their input, nor 3x3 on larger maps, where the planes won).  BENCHMARKS.md's
    "What was tried" holds the measurements."""
    if COLUMNS == "never":
        return False
    width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)
    cdef int64_t kk = kernel[0] * kernel[1]
    if n_in * kk * _round_up(batch * out_hw[0] * out_hw[1], width) * itemsize > COLUMNS_MAX_BYTES:
        return False
    if COLUMNS == "always":
        return True
    hw = out_hw[0] * out_hw[1]
    if tuple(stride) != (1, 1):
        return not forward or (kk > 1 and hw <= COLUMNS_MAX_STRIDED_HW)
    return kk > 1 and hw <= COLUMNS_MAX_HW


def _columns_wgrad(kernel, stride, int64_t n_in, out_hw, int64_t batch, int64_t itemsize):
    """True when a grad_weight runs by the columns path (COLUMNS; a strided conv's planes are
    its polyphase planes, and small maps' are mostly padding): strided convs and maps of at
    most COLUMNS_MAX_HW outputs, 1x1 or k x k (from 6x6 maps on, the planes are faster)."""
    if COLUMNS == "never":
        return False
    cdef int64_t kk = kernel[0] * kernel[1]
    cdef int64_t lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    if n_in * kk * _round_up(batch * out_hw[0] * out_hw[1], lanes) * itemsize > COLUMNS_MAX_BYTES:
        return False
    return COLUMNS == "always" or tuple(stride) != (1, 1) or out_hw[0] * out_hw[1] <= COLUMNS_MAX_HW


def _edge_rows(index, int64_t n_in, int64_t kk):
    """(rows, outs, wpos) of the columns path's terms for index (Cout, D), checked, with kk taps,
    in weight order: term (v, i, t) reads source row index[v, i] * kk + t of the image columns
    for output v with weight entry (v * D + i) * kk + t."""
    _check_index(index.ravel(), n_in)
    n_out, degree = index.shape[0], index.shape[1]
    rows = (np.asarray(index, np.int64)[:, :, None] * kk + np.arange(kk)).reshape(-1)
    outs = np.repeat(np.arange(n_out, dtype=np.int64), degree * kk)
    return rows, outs, np.arange(n_out * degree * kk, dtype=np.int64)


def _column_terms(index, int64_t n_in, int64_t kk, int64_t width, int64_t block_rows, bint reverse=False):
    """The columns path's term lists for index (Cout, D), checked, with kk taps: source row
    u * kk + t of the image columns holds channel u's tap t, so output v's terms are rows
    index[v, i] * kk + t, of weight entry (v * D + i) * kk + t.  reverse: grad_input's
    lists instead, destination rows u * kk + t reading grad_out's rows v (the same edges
    and weight entries).  See _block_quads for what is returned."""
    rows, outs, wpos = _edge_rows(index, n_in, kk)
    n_out = index.shape[0]
    if reverse:
        return _block_quads(rows, outs, wpos, n_in * kk, n_out, width, block_rows)
    return _block_quads(outs, rows, wpos, n_out, n_in * kk, width, block_rows)


def _block_quads(dst, src, wpos, int64_t n_dst, int64_t n_src, int64_t width, int64_t block_rows):
    """Term lists of xk_quad_columns for the terms (dst[j] += w[wpos[j]] * source row src[j]):
    (off int32, wsrc, ptr, row0).  The n_src source rows come in blocks [row0[b], row0[b + 1])
    of block_rows; in block b, quad q's terms are [ptr[b, q], ptr[b, q + 1]) of (term,
    XK_SHARE) slots, each destination's in source-row order, the quad's shorter lists
    padded with the block's zero row (offset rows * width) and weight entry -1 (wsrc: where
    each slot's weight comes from)."""
    nb = max(1, (n_src + block_rows - 1) // block_rows)
    row0 = np.minimum(np.arange(nb + 1, dtype=np.int64) * block_rows, n_src)
    blk = src // block_rows
    order = np.lexsort((src, dst, blk))          # by block, destination, source row
    dst, src, wpos, blk = dst[order], src[order], wpos[order], blk[order]
    n_quads = (n_dst + XK_SHARE - 1) // XK_SHARE
    n_slots = n_quads * XK_SHARE
    count = np.bincount(blk * n_slots + dst, minlength=nb * n_slots)
    per_quad = count.reshape(nb, n_quads, XK_SHARE).max(axis=2)   # (nb, n_quads) terms
    ptr = np.zeros((nb, n_quads + 1), np.int64)
    ptr[:, 1:] = np.cumsum(per_quad, axis=1)
    ptr += np.concatenate(([0], np.cumsum(per_quad.sum(axis=1))[:-1]))[:, None]
    total = int(per_quad.sum())
    if total * XK_SHARE > np.iinfo(np.int32).max or (block_rows + 1) * width > np.iinfo(np.int32).max:
        raise ValueError("too many terms for the columns path's 32-bit offsets")
    first = np.concatenate(([0], np.cumsum(count)[:-1]))
    k = np.arange(dst.shape[0], dtype=np.int64) - first[blk * n_slots + dst]   # position in its list
    slot = (ptr[blk, dst // XK_SHARE] + k) * XK_SHARE + dst % XK_SHARE
    block_slots = np.diff(np.concatenate((ptr[:, 0], [total]))) * XK_SHARE
    off = np.repeat(np.diff(row0) * width, block_slots).astype(np.int32)
    off[slot] = (src - row0[blk]) * width
    wsrc = np.full(total * XK_SHARE, -1, np.int32)
    wsrc[slot] = wpos
    return off, wsrc, ptr.reshape(-1), row0


def _column_weights(const floating[::1] wflat, const int32_t[::1] wsrc, int n_chunks):
    """The columns path's weights in slot order: wflat[wsrc[j]], 0 where wsrc[j] < 0: a gather
    over the whole weight on every call (a third of the kernel's time on a stride-2 3x3 layer
    at batch 1), so split between threads, its indices int32, into scratch (slot 7)."""
    out = _scratch(7, wsrc.shape[0], np.float32 if floating is float else np.float64)
    cdef floating[::1] o = out
    cdef int64_t j, e
    for j in prange(wsrc.shape[0], nogil=True, schedule="static", num_threads=n_chunks):
        e = wsrc[j]
        o[j] = wflat[e] if e >= 0 else 0
    return out


# Image rows of at most this many outputs take xk_im2col_table (one offset per position) instead
# of xk_im2col (bounds worked out per row, which short rows cannot amortise).
IM2COL_TABLE_MAX_WO = 16


@functools.lru_cache(maxsize=64)
def _im2col_offsets(row, col, height, width, kernel, stride, padding, dilation, out_hw):
    """(kh * kw, Ho * Wo) int64, read-only: the offset in an image's channel (rows row apart,
    columns col apart) that output position (y, c) of tap (ky, kx) reads, or -1 outside it."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo) = kernel, stride, padding, dilation, out_hw
    iy = np.arange(ho)[None, :] * sh + np.arange(kh)[:, None] * dh - ph          # (kh, ho)
    ix = np.arange(wo)[None, :] * sw + np.arange(kw)[:, None] * dw - pw          # (kw, wo)
    oy = np.where((iy >= 0) & (iy < height), iy * row, -1)[:, None, :, None]
    ox = np.where((ix >= 0) & (ix < width), ix * col, -1)[None, :, None, :]
    off = np.where((oy < 0) | (ox < 0), -1, oy + ox)                             # (kh, kw, ho, wo)
    off = np.ascontiguousarray(off.reshape(kh * kw, ho * wo), np.int64)
    off.flags.writeable = False
    return off


def _im2col(const floating[:, :, :, :] x, kernel, stride, padding, dilation, out_hw, int64_t p_pad,
            floating[:, ::1] col, int n_chunks):
    """col (Cin * kh * kw, p_pad) <- the image columns of x (B, Cin, H, W) (xk_im2col, or for
    short rows xk_im2col_table), channels split between threads."""
    cdef xk_image_t im = _image(x.shape, x.strides, sizeof(floating))
    cdef int64_t n_in = x.shape[1], batch = x.shape[0], chunk
    cdef int64_t kh = kernel[0], kw = kernel[1], sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef int64_t dh = dilation[0], dw = dilation[1], ho = out_hw[0], wo = out_hw[1]
    cdef const int64_t[:, ::1] offs
    if wo <= IM2COL_TABLE_MAX_WO and batch * ho * wo > 0:
        offs = _im2col_offsets(im.row, im.col, im.height, im.width, (kh, kw), (sh, sw), (ph, pw), (dh, dw),
                               (ho, wo))
        for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
            if floating is float:
                xk_im2col_table_f32(&col[0, 0], p_pad, &x[0, 0, 0, 0], im.chan, im.img, batch, &offs[0, 0],
                                    ho * wo, kh * kw, n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
            else:
                xk_im2col_table_f64(&col[0, 0], p_pad, &x[0, 0, 0, 0], im.chan, im.img, batch, &offs[0, 0],
                                    ho * wo, kh * kw, n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
        return
    for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
        if floating is float:
            xk_im2col_f32(&col[0, 0], p_pad, &x[0, 0, 0, 0], &im, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
        else:
            xk_im2col_f64(&col[0, 0], p_pad, &x[0, 0, 0, 0], &im, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)


def _col2im(const floating[:, ::1] gcol, floating[:, :, :, :] grad_x, kernel, stride, padding, dilation, out_hw,
            int n_chunks):
    """grad_x (B, Cin, H, W) <- the image columns' gradient gcol summed back (xk_col2im),
    channels split between threads."""
    cdef xk_image_t im = _image(grad_x.shape, grad_x.strides, sizeof(floating))
    cdef int64_t n_in = grad_x.shape[1], batch = grad_x.shape[0], chunk, p_pad = gcol.shape[1]
    cdef int64_t kh = kernel[0], kw = kernel[1], sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef int64_t dh = dilation[0], dw = dilation[1], ho = out_hw[0], wo = out_hw[1]
    for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
        if floating is float:
            xk_col2im_f32(&grad_x[0, 0, 0, 0], &im, &gcol[0, 0], p_pad, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
        else:
            xk_col2im_f64(&grad_x[0, 0, 0, 0], &im, &gcol[0, 0], p_pad, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)


cdef void _columns_run(const floating *col, int64_t p_pad, const int32_t *off, const floating *qw,
                       const int64_t *ptr, const int64_t *row0, int64_t nb, int64_t n_dst, const floating *bias,
                       floating *panels, int64_t panel_stride, floating *y, int n_chunks) noexcept nogil:
    """y (n_dst, p_pad) = the columns path's sums (xk_quad_columns) over col (rows, p_pad): work
    items (tile of XK_SACC vectors, block of quads), each computing its own positions of its
    own outputs in one order at any thread count."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t n_tiles = p_pad // width
    cdef int64_t n_quads = (n_dst + XK_SHARE - 1) // XK_SHARE
    cdef int64_t n_ob = _quad_blocks(n_quads, n_tiles, n_chunks)
    cdef int64_t per_ob = (n_quads + n_ob - 1) // n_ob
    cdef int64_t total = n_tiles * n_ob, chunk, item, t, q_lo, q_hi
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            t = item // n_ob
            q_lo = item % n_ob * per_ob
            q_hi = min(n_quads, q_lo + per_ob)
            if floating is float:
                xk_quad_columns_f32(col, p_pad, t * width, off, qw, ptr, row0, nb, n_dst, bias,
                                    panels + chunk * panel_stride, y, p_pad, q_lo, q_hi)
            else:
                xk_quad_columns_f64(col, p_pad, t * width, off, qw, ptr, row0, nb, n_dst, bias,
                                    panels + chunk * panel_stride, y, p_pad, q_lo, q_hi)


def _column_sums(src, int64_t p_pad, terms, weight, int64_t n_dst, bias, int n_chunks):
    """y (n_dst, p_pad), scratch: the columns path's sums (xk_quad_columns, terms from
    _column_terms) over the source rows src (rows, p_pad), with weight's entries."""
    off, wsrc, ptr, row0 = terms
    dtype = src.dtype
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if dtype.itemsize == 4 else XK_LANES_F64)
    qw = _column_weights(np.asarray(weight).reshape(-1), wsrc, n_chunks)
    y = _scratch(4, n_dst * p_pad, dtype).reshape(n_dst, p_pad)
    cdef int64_t panel = (int(np.diff(row0).max()) + 1) * width
    panels = _scratch(5, n_chunks * panel, dtype)
    if dtype.itemsize == 4:
        _columns_call[float](src, p_pad, off, qw, ptr, row0, n_dst, bias, panels, panel, y, n_chunks)
    else:
        _columns_call[double](src, p_pad, off, qw, ptr, row0, n_dst, bias, panels, panel, y, n_chunks)
    return y


def _column_geometry(int64_t batch, out_hw, int64_t itemsize):
    """(positions B * Ho * Wo, p_pad: rounded up to whole panels, panel width, source rows per block)."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)
    n = batch * out_hw[0] * out_hw[1]
    return n, _round_up(n, width), width, max(1, COLUMNS_BLOCK_BYTES // (width * itemsize) - 1)


def _columns_fwd(x, weight, index, bias, out, stride, padding, dilation, int n_chunks):
    """out = X-Conv of x by the columns path: the image columns (_im2col), then 1x1 quads over
    blocks of their rows, then out from the (Cout, B * Ho * Wo) sums."""
    xa, wa, oa = np.asarray(x), np.asarray(weight), np.asarray(out)
    batch, n_in, n_out, (kh, kw), (ho, wo) = xa.shape[0], xa.shape[1], wa.shape[0], wa.shape[2:], oa.shape[2:]
    n, p_pad, width, block_rows = _column_geometry(batch, (ho, wo), wa.itemsize)
    terms = _cached_terms("columns", index, (n_in, kh * kw, width, block_rows),
                          lambda: _column_terms(np.asarray(index), n_in, kh * kw, width, block_rows))
    col = _scratch(3, n_in * kh * kw * p_pad, wa.dtype).reshape(n_in * kh * kw, p_pad)
    _im2col(x, (kh, kw), stride, padding, dilation, (ho, wo), p_pad, col, n_chunks)
    y = _column_sums(col, p_pad, terms, wa, n_out, bias, n_chunks)
    oa[...] = y[:, :n].reshape(n_out, batch, ho, wo).transpose(1, 0, 2, 3)


def _columns_bwd_input(grad_out, weight, index, grad_x, stride, padding, dilation, int n_chunks):
    """grad_x of an X-Conv by the columns path: grad_out as (Cout, B * Ho * Wo) rows, 1x1
    quads into the image columns' gradient (each (channel, tap) row gathering the outputs
    that read it, the same edges reversed), then summed back into grad_x (_col2im)."""
    ga, wa, gx = np.asarray(grad_out), np.asarray(weight), np.asarray(grad_x)
    batch, n_in, n_out, (kh, kw), (ho, wo) = ga.shape[0], gx.shape[1], wa.shape[0], wa.shape[2:], ga.shape[2:]
    n, p_pad, width, block_rows = _column_geometry(batch, (ho, wo), wa.itemsize)
    terms = _cached_terms("columns input", index, (n_in, kh * kw, width, block_rows),
                          lambda: _column_terms(np.asarray(index), n_in, kh * kw, width, block_rows, True))
    g = _scratch(3, n_out * p_pad, wa.dtype).reshape(n_out, p_pad)
    g[:, :n].reshape(n_out, batch, ho, wo)[...] = ga.transpose(1, 0, 2, 3)
    g[:, n:] = 0
    gcol = _column_sums(g, p_pad, terms, wa, n_in * kh * kw, None, n_chunks)
    _col2im(gcol, grad_x, (kh, kw), stride, padding, dilation, (ho, wo), n_chunks)


def _dot_terms(index, int64_t n_in, int64_t kk, int64_t block_rows):
    """The columns path's grad_weight term lists for index (Cout, D), checked: (rows, wpos, ptr).
    Output v's terms in block b (source rows [b * block_rows, (b + 1) * block_rows) of the image
    columns, row u * kk + t for channel u's tap t) are [ptr[b * (Cout + 1) + v], ptr[b * (Cout + 1)
    + v + 1]) of rows (their source rows, in order) and wpos (their weight entries (v * D + i) *
    kk + t)."""
    rows, outs, wpos = _edge_rows(index, n_in, kk)
    n_out = index.shape[0]
    nb = max(1, (n_in * kk + block_rows - 1) // block_rows)
    blk = rows // block_rows
    order = np.lexsort((rows, outs, blk))
    starts = np.zeros(nb * n_out + 1, np.int64)
    np.cumsum(np.bincount(blk * n_out + outs, minlength=nb * n_out), out=starts[1:])
    ptr = np.empty((nb, n_out + 1), np.int64)
    ptr[:, :n_out] = starts[:-1].reshape(nb, n_out)
    ptr[:, n_out] = starts[n_out::n_out]
    return rows[order], wpos[order], ptr.reshape(-1)


def _tap_terms(index, int64_t n_in, int64_t kk):
    """The columns path's grad_weight groups for index (Cout, D), checked, over kernels of kk
    taps: (gptr, sv, sw).  The outputs that read channel u come in groups of XK_TAP_OUTS,
    groups [gptr[u], gptr[u + 1]); slot j of the groups is output sv[j] with weight entries
    sw[j] + t, sw[j] = (v * D + i) * kk for the edge index[v, i] = u; unused slots have sv =
    Cout (a zero row) and sw = -1."""
    flat = index.ravel()
    _check_index(flat, n_in)
    n_out, degree = index.shape[0], index.shape[1]
    edges = np.argsort(flat, kind="stable")               # by channel, then output
    count = np.bincount(flat, minlength=n_in)
    groups = (count + XK_TAP_OUTS - 1) // XK_TAP_OUTS
    gptr = np.zeros(n_in + 1, np.int64)
    np.cumsum(groups, out=gptr[1:])
    first = np.zeros(n_in, np.int64)
    np.cumsum(count[:-1], out=first[1:])
    u = flat[edges]
    slot = gptr[u] * XK_TAP_OUTS + np.arange(flat.shape[0], dtype=np.int64) - first[u]
    sv = np.full(int(gptr[-1]) * XK_TAP_OUTS, n_out, np.int64)
    sw = np.full(int(gptr[-1]) * XK_TAP_OUTS, -1, np.int64)
    sv[slot] = edges // degree
    sw[slot] = edges * kk
    return gptr, sv, sw


def _columns_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation, int n_chunks):
    """grad_weight of an X-Conv by the columns path: the image columns of x (_im2col) and
    grad_out as (Cout, B * Ho * Wo) rows, then one dot product per weight entry over tiles of
    positions.  k x k kernels: a channel's taps against XK_TAP_OUTS outputs that read it at a
    time (xk_dot_columns_taps), threads owning ranges of channels; 1x1: blocks of source rows
    that stay in L1 while every output reads them (xk_dot_columns), threads owning ranges of
    outputs.  Every entry sums its tiles in order: the result does not depend on the thread
    count."""
    ga, xa, gwa = np.asarray(grad_out), np.asarray(x), np.asarray(grad_weight)
    batch, n_in, n_out, degree = xa.shape[0], xa.shape[1], gwa.shape[0], gwa.shape[1]
    (kh, kw), (ho, wo) = gwa.shape[2:], ga.shape[2:]
    cdef int64_t kk = kh * kw
    cdef int64_t itemsize = gwa.itemsize
    cdef int64_t lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    cdef int64_t n = batch * ho * wo
    cdef int64_t p_pad = _round_up(n, lanes)
    cdef int64_t tile, block_rows
    col = _scratch(3, n_in * kk * p_pad, gwa.dtype).reshape(n_in * kk, p_pad)
    _im2col(x, (kh, kw), stride, padding, dilation, (ho, wo), p_pad, col, n_chunks)
    g = _scratch(4, (n_out + 1) * p_pad, gwa.dtype).reshape(n_out + 1, p_pad)
    g[:n_out, :n].reshape(n_out, batch, ho, wo)[...] = ga.transpose(1, 0, 2, 3)
    g[:n_out, n:] = 0
    g[n_out] = 0
    gwa[...] = 0
    if kk >= XK_TAP_ROWS:
        # positions per tile: grad_out's stretch of every output stays in L2
        tile = max(4 * lanes, COLUMNS_WGRAD_G_BYTES // ((n_out + 1) * itemsize) // lanes * lanes)
        terms = _cached_terms("columns weight taps", index, (n_in, kk),
                              lambda: _tap_terms(np.asarray(index), n_in, kk))
        if itemsize == 4:
            _dot_taps_call[float](grad_weight, g, col, terms, kk, n_in, p_pad, min(tile, p_pad), n_chunks)
        else:
            _dot_taps_call[double](grad_weight, g, col, terms, kk, n_in, p_pad, min(tile, p_pad), n_chunks)
        return
    tile = min(p_pad, _round_up(COLUMNS_WGRAD_TILE, lanes))
    block_rows = max(1, COLUMNS_BLOCK_BYTES // (tile * itemsize))
    rows, wpos, ptr = _cached_terms("columns weight", index, (n_in, kk, block_rows),
                                    lambda: _dot_terms(np.asarray(index), n_in, kk, block_rows))
    if itemsize == 4:
        _dot_columns_call[float](grad_weight, g[None, :, None, :], col[None, :, None, :], rows, wpos, ptr, tile,
                                 block_rows, n_chunks)
    else:
        _dot_columns_call[double](grad_weight, g[None, :, None, :], col[None, :, None, :], rows, wpos, ptr, tile,
                                  block_rows, n_chunks)


def _dots_in_place_rule(int64_t hw, int64_t itemsize, bint shared):
    """True when a stride-1 1x1 grad_weight over maps of hw positions takes _dots_in_place
    (shared: the index rows come in runs of XK_SHARE, which the packed planes serve better)."""
    lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    return (COLUMNS != "never" and not shared and DOTS_IN_PLACE_HW[0] <= hw <= DOTS_IN_PLACE_HW[1]
            and hw % lanes == 0)


def _dots_in_place(grad_out, x, index, grad_weight, int n_chunks):
    """grad_weight of a stride-1 1x1 X-Conv whose images are contiguous maps of a whole number of
    vectors: xk_dot_columns reading x's and grad_out's channels in place, image by image (the
    columns of a 1x1 conv are x itself), COLUMNS_WGRAD_TILE positions (or a whole map) a pass."""
    ga, xa, gwa = np.asarray(grad_out), np.asarray(x), np.asarray(grad_weight)
    batch, n_in, n_out = xa.shape[0], xa.shape[1], gwa.shape[0]
    cdef int64_t hw = xa.shape[2] * xa.shape[3], itemsize = gwa.itemsize
    cdef int64_t lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    cdef int64_t tile = hw if hw <= COLUMNS_WGRAD_TILE else _round_up(COLUMNS_WGRAD_TILE, lanes)
    cdef int64_t block_rows = max(1, COLUMNS_BLOCK_BYTES // (tile * itemsize))
    rows, wpos, ptr = _cached_terms("columns weight", index, (n_in, 1, block_rows),
                                    lambda: _dot_terms(np.asarray(index), n_in, 1, block_rows))
    gwa[...] = 0
    if itemsize == 4:
        _dot_columns_call[float](grad_weight, grad_out, x, rows, wpos, ptr, tile, block_rows, n_chunks)
    else:
        _dot_columns_call[double](grad_weight, grad_out, x, rows, wpos, ptr, tile, block_rows, n_chunks)


cdef void _dot_columns_call(floating[:, :, :, ::1] gw, const floating[:, :, :, :] g, const floating[:, :, :, :] x,
                            const int64_t[::1] rows, const int64_t[::1] wpos, const int64_t[::1] ptr,
                            int64_t tile, int64_t block_rows, int n_chunks):
    """xk_dot_columns over images of contiguous rows: g (B, >= Cout, H, W) and x (B, rows, H, W)
    (the image columns as (1, rows, 1, p_pad)), tile positions a pass, threads owning ranges of
    outputs and summing images and tiles in order, each copying a block of rows at a time into
    its panel (scratch slot 5)."""
    cdef int64_t n_out = gw.shape[0], hw = x.shape[2] * x.shape[3], batch = x.shape[0], n_src = x.shape[1]
    cdef int64_t nb = ptr.shape[0] // (n_out + 1), chunk, b, p0, v_lo, v_hi
    cdef int64_t gchan = g.strides[1] // sizeof(floating), xchan = x.strides[1] // sizeof(floating)
    cdef int64_t panel_size = block_rows * tile
    cdef floating *panels = <floating *>cnp.PyArray_DATA(
        _scratch(5, n_chunks * panel_size, np.float32 if floating is float else np.float64))
    with nogil:
        for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
            v_lo = n_out * chunk // n_chunks
            v_hi = n_out * (chunk + 1) // n_chunks
            for b in range(batch):
                p0 = 0
                while p0 < hw:
                    if floating is float:
                        xk_dot_columns_f32(&gw[0, 0, 0, 0], &g[b, 0, 0, 0], gchan, &x[b, 0, 0, 0], xchan, &rows[0],
                                           &wpos[0], &ptr[0], nb, n_out, v_lo, v_hi, p0, min(tile, hw - p0),
                                           block_rows, n_src, panels + chunk * panel_size)
                    else:
                        xk_dot_columns_f64(&gw[0, 0, 0, 0], &g[b, 0, 0, 0], gchan, &x[b, 0, 0, 0], xchan, &rows[0],
                                           &wpos[0], &ptr[0], nb, n_out, v_lo, v_hi, p0, min(tile, hw - p0),
                                           block_rows, n_src, panels + chunk * panel_size)
                    p0 = p0 + tile


cdef void _dot_taps_call(floating[:, :, :, ::1] gw, const floating[:, ::1] g, const floating[:, ::1] col, terms,
                         int64_t kk, int64_t n_in, int64_t p_pad, int64_t tile, int n_chunks):
    cdef const int64_t[::1] gptr = terms[0]
    cdef const int64_t[::1] sv = terms[1]
    cdef const int64_t[::1] sw = terms[2]
    cdef int64_t chunk, p0, u_lo, u_hi
    if sv.shape[0] == 0:
        return
    with nogil:
        for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
            u_lo = n_in * chunk // n_chunks
            u_hi = n_in * (chunk + 1) // n_chunks
            p0 = 0
            while p0 < p_pad:
                if floating is float:
                    xk_dot_columns_taps_f32(&gw[0, 0, 0, 0], &g[0, 0], p_pad, &col[0, 0], p_pad, kk, &gptr[0],
                                            &sv[0], &sw[0], u_lo, u_hi, p0, min(tile, p_pad - p0))
                else:
                    xk_dot_columns_taps_f64(&gw[0, 0, 0, 0], &g[0, 0], p_pad, &col[0, 0], p_pad, kk, &gptr[0],
                                            &sv[0], &sw[0], u_lo, u_hi, p0, min(tile, p_pad - p0))
                p0 = p0 + tile


cdef void _columns_call(floating[:, ::1] col, int64_t p_pad, const int32_t[::1] off, const floating[::1] qw,
                        const int64_t[::1] ptr, const int64_t[::1] row0, int64_t n_dst, bias, floating[::1] panels,
                        int64_t panel_stride, floating[:, ::1] y, int n_chunks):
    cdef const floating[::1] b
    cdef const floating *bias_ptr = NULL
    if bias is not None:
        b = bias
        bias_ptr = &b[0]
    with nogil:
        _columns_run(&col[0, 0], p_pad, &off[0], &qw[0], &ptr[0], &row0[0], row0.shape[0] - 1, n_dst, bias_ptr,
                     &panels[0], panel_stride, &y[0, 0], n_chunks)

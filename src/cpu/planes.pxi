# ---------------------------------------------------------------- planes
#
# Where each tap reads the packed planes (polyphase planes for strides), and the tiles over them.

def _row_width(width, kernel, stride, dilation, lanes):
    """Grid width for a plane `width` positions wide (the output width plus kernel - 1):
    for stride-1 undilated 3x3 kernels at least the output width rounded up to whole
    vectors of `lanes`, so the vectors that cover a row's outputs stay in that row
    (xk_dot_rows3); otherwise, and with lanes 0, unchanged."""
    if lanes and kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1):
        return max(width, _round_up(width - 2, lanes))
    return width


def _stacked_rows(r_out, reach, off, h_src):
    """Grid rows per image for planes of consecutive source rows (row step 1) stacked
    image after image: r_out output rows whose taps read up to `reach` rows further,
    plane row a holding source row a + off of h_src rows.  The rows that the last outputs
    read past the image may be the next image's leading zero rows (its top padding,
    -off of them) instead of rows of their own, as long as every source row that is read
    stays in its image: 3x3 'same' convs stack H + 1 rows per image, not H + 2."""
    top = max(0, -off)
    return max(r_out, r_out + reach - top, min(r_out + reach, top + h_src))


def _rows3(shift, wb, lanes):
    """For xk_corr_rows3: (wb, perm) when the taps' offsets are base + r*wb + c for r, c < 3
    (tap perm[r*3 + c] at r, c) and lanes is given; else (0, None)."""
    shift = np.asarray(shift, np.int64)
    if len(shift) != 9 or not lanes:
        return 0, None
    r, c = np.divmod(shift - shift.min(), wb)
    if r.max() > 2 or c.max() > 2 or len(set(zip(r.tolist(), c.tolist()))) != 9:
        return 0, None
    perm = np.empty(9, np.int64)
    perm[r * 3 + c] = np.arange(9)
    return wb, perm


# How fast xk_corr_rows3 runs with tiles of 4, 2 and 1 vector per row (12, 6 and 3
# rows high: wider tiles share each load between fewer kernel rows but pay the row
# overhead less often), relative to 4: measured on one thread, 3x3 forward on a
# 32-wide grid.
ROWS3_SPEED = MappingProxyType({4: 1.0, 2: 0.945, 1: 0.855})


def _rows3_vectors(out_w, lanes):
    """(vectors per tile row, tiles per grid row) for rows3 tiles over out_w output
    columns: the width that does the most useful work per unit of time, counting the
    columns past out_w that the last tile of a row computes for nothing."""
    def score(a):
        tiles = -(-out_w // (a * lanes))
        return ROWS3_SPEED[a] * out_w / (tiles * a * lanes)
    a = max(ROWS3_SPEED, key=score)
    return a, -(-out_w // (a * lanes))


def _rows_shared(index):
    """True when index's rows come in runs of XK_SHARE equal rows (block expanders with
    block a multiple of XK_SHARE): then those outputs read every input vector together."""
    rows = np.asarray(index)
    if rows.shape[0] % XK_SHARE or rows.shape[0] == 0:
        return False
    runs = rows.reshape(-1, XK_SHARE, rows.shape[1])
    return bool((runs == runs[:, :1]).all())


def _runs_shared(index):
    """_rows_shared(index), memoised with the graph's term lists."""
    return _cached_terms("runs", index, None, lambda: (_rows_shared(index),))[0]


class _ForwardPlanes:
    """Where the forward taps read x.

    Output (y, x) and tap (ky, kx) read x_pad[y*sh + ky*dh, x*sw + kx*dw]; with
    ky*dh = qy*sh + ry that is row y + qy of polyphase plane ry.  One hb x wb
    plane per used phase (frame) holds all of it, grid (r, c) = output (r, c)
    for r < Ho, c < Wo, and tap t is the flat offset slot[t] * len + shift[t].
    Given the vector lanes, stride-1 3x3 grids take xk_corr_rows3 (rows3 = wb, see
    _row_width); rows3 = 0 otherwise.
    """

    def __init__(self, k_hw, stride, padding, dilation, out_hw, lanes=0):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k_hw, stride, padding, dilation
        ry, qy = _tap_split(kh, dh, sh)
        rx, qx = _tap_split(kw, dw, sw)
        taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]
        phases = sorted({(ry[ky], rx[kx]) for ky, kx in taps})
        slot = {phase: k for k, phase in enumerate(phases)}
        self.hb = out_hw[0] + max(qy)
        if sh == 1:  # x's height is then out_h + (kh - 1) * dh - 2 * ph
            self.hb = _stacked_rows(out_hw[0], max(qy), -ph, out_hw[0] + (kh - 1) * dh - 2 * ph)
        self.wb = _row_width(out_hw[1] + max(qx), (kh, kw), (sh, sw), (dh, dw), lanes)
        self.out_w = out_hw[1]
        self.frames = np.array([(sh, sw, r - ph, c - pw) for r, c in phases], FRAME_DTYPE)
        self.slot = [slot[(ry[ky], rx[kx])] for ky, kx in taps]
        self.shift = [qy[ky] * self.wb + qx[kx] for ky, kx in taps]
        wb3, perm = _rows3(self.shift, self.wb, lanes)
        # rows3 also needs the vectors holding a row's outputs to stay in that row (xk_dot_rows3)
        self.rows3 = wb3 if (len(phases) == 1 and perm is not None and (perm == np.arange(9)).all()
                             and self.wb >= _round_up(self.out_w, lanes)) else 0

    def layout(self, group, tile, itemsize, slack=0):
        """(len, cstride, toff) for `group` images: plane length per frame (positions
        rounded up to `tile`, plus the taps' reach and `slack`), channel stride (the
        frames of a channel end to end, padded), tap offsets."""
        length = _round_up(group * self.hb * self.wb, tile) + max(self.shift) + slack
        toff = np.array([s * length + d for s, d in zip(self.slot, self.shift)], np.int64)
        return length, _odd_lines(len(self.frames) * length, itemsize), toff


class _InputGradPlanes:
    """Where grad_input's taps read grad_out, per output phase of grad_x.

    grad_x row y receives g[Y] * w[ky] when y + ph = Y*sh + ky*dh.  Write
    y + ph = Q*sh + ry and ky*dh = qy*sh + ry (same residue ry): Y = Q - qy.
    Grid row r stands for Q = r + Q0 in each phase ry; the one packed plane of
    grad_out is shifted by max(qy) so every tap offset is >= 0.
    """

    def __init__(self, x_hw, k_hw, stride, padding, dilation, x_img, lanes=0):
        (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = x_hw, k_hw, stride, padding, dilation
        ry, qy = _tap_split(kh, dh, sh)
        rx, qx = _tap_split(kw, dw, sw)
        q0y, q0x = ph // sh, pw // sw
        rows = (ph + h - 1) // sh - q0y + 1
        cols = (pw + w - 1) // sw - q0x + 1
        self.hb = rows + max(qy)
        if sh == 1:  # grad_out's height is then h + 2 * ph - (kh - 1) * dh
            self.hb = _stacked_rows(rows, max(qy), q0y - max(qy), h + 2 * ph - (kh - 1) * dh)
        self.wb = _row_width(cols + max(qx), (kh, kw), (sh, sw), (dh, dw), lanes)
        self.out_w = cols
        self.frame = np.array([(1, 1, q0y - max(qy), q0x - max(qx))], FRAME_DTYPE)
        order, tap_ptr, scatter = [], [0], []
        for r in range(sh):
            for c in range(sw):
                order += [ky * kw + kx for ky in range(kh) for kx in range(kw)
                          if ry[ky] == r and rx[kx] == c]
                tap_ptr.append(len(order))
                # grid (g, a, b) of phase (r, c) is grad_x[g, (a + q0y)*sh + r - ph, (b + q0x)*sw + c - pw]
                y0, x0 = q0y * sh + r - ph, q0x * sw + c - pw
                scatter.append((y0 * x_img["row"] + x0 * x_img["col"], x_img["img"],
                                sh * x_img["row"], sw * x_img["col"],
                                max(0, -(y0 // sh)), min(rows, (h - 1 - y0) // sh + 1),
                                max(0, -(x0 // sw)), min(cols, (w - 1 - x0) // sw + 1)))
        self.order = np.array(order, np.int64)
        self.tap_ptr = np.array(tap_ptr, np.int64)
        self.scatter = np.array(scatter, SCATTER_DTYPE)
        self.shift = np.array([(max(qy) - qy[t // kw]) * self.wb + (max(qx) - qx[t % kw])
                               for t in order], np.int64)
        self.rows3, perm = _rows3(self.shift, self.wb, lanes) if sh * sw == 1 else (0, None)
        if perm is not None:  # xk_corr_rows3 wants the taps by offset
            self.order, self.shift = self.order[perm], self.shift[perm]

    def layout(self, group, tile, itemsize, slack=0):
        """(len, cstride, toff) of the packed grad_out for `group` images (see _ForwardPlanes.layout)."""
        length = _round_up(group * self.hb * self.wb, tile) + int(self.shift.max(initial=0)) + slack
        return length, _odd_lines(length, itemsize), self.shift


def _frozen(planes):
    """planes with its arrays made read-only (instances are shared through the caches below)."""
    for value in vars(planes).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return planes


def _pair(v):
    return tuple(int(a) for a in v)


@functools.lru_cache(maxsize=256)
def _forward_planes_cached(k_hw, stride, padding, dilation, out_hw, lanes):
    return _frozen(_ForwardPlanes(k_hw, stride, padding, dilation, out_hw, lanes))


def _forward_planes(k_hw, stride, padding, dilation, out_hw, lanes):
    """_ForwardPlanes(...), built once per geometry: building one costs up to ~40 us,
    which is most of a small layer's call."""
    return _forward_planes_cached(_pair(k_hw), _pair(stride), _pair(padding), _pair(dilation), _pair(out_hw),
                                  int(lanes))


@functools.lru_cache(maxsize=256)
def _input_grad_planes_cached(x_hw, k_hw, stride, padding, dilation, img_row_col, lanes):
    img, row, col = img_row_col
    return _frozen(_InputGradPlanes(x_hw, k_hw, stride, padding, dilation, dict(img=img, row=row, col=col), lanes))


def _input_grad_planes(x_hw, k_hw, stride, padding, dilation, x_img, lanes):
    """_InputGradPlanes(...), built once per geometry and grad_x strides."""
    return _input_grad_planes_cached(_pair(x_hw), _pair(k_hw), _pair(stride), _pair(padding), _pair(dilation),
                                     (int(x_img["img"]), int(x_img["row"]), int(x_img["col"])), int(lanes))


def _tiling(planes, rows3, group, tile, itemsize, lanes):
    """(a3, col_tiles, len, cstride, toff) for _correlate over planes: with rows3, tiles of
    XK_NACC / a3 grid rows of a3 vectors (_rows3_vectors) and planes long enough for a
    row's last tile reaching past it; else a3 = 0 and flat tiles of `tile` positions."""
    if not rows3:
        return (0, 0) + tuple(planes.layout(group, tile, itemsize))
    a3, col_tiles = _rows3_vectors(planes.out_w, lanes)
    return (a3, col_tiles) + tuple(planes.layout(group, XK_NACC // a3 * rows3, itemsize, 4 * lanes))

# ---------------------------------------------------------------- X-Conv forward

cdef enum:
    PATH_WINOGRAD = 1
    PATH_COLUMNS = 2
    PATH_QUADS = 3
    PATH_CORRELATE = 4


def _settings():
    """The module settings a plan's choices depend on, as a key (tests and tuning change them
    between calls, by assigning new values: the mappings among them are read-only).  Made
    again only when one of them is another object than at the last call."""
    global _settings_made
    seen = (PACK_BYTES, BLOCK_BYTES, BLOCK_TERMS, QUAD_PANEL_BYTES, COLUMNS, COLUMNS_MAX_HW,
            COLUMNS_MAX_STRIDED_HW, COLUMNS_BLOCK_BYTES, COLUMNS_MAX_BYTES, WINOGRAD, WINO_TILE,
            WINO_F4_VALUES, WINO_MIN_TERMS, WINO_MIN_PANELS, WINO_MIN_COVER, WINO_SCRATCH_BYTES, ROWS3_SPEED)
    made = _settings_made  # (the objects, the key made from them), replaced as one
    if made is not None and _same_objects(seen, made[0]):
        return made[1]
    key = tuple(tuple(v.items()) if isinstance(v, Mapping) else v for v in seen)
    _settings_made = (seen, key)
    return key


cdef tuple _settings_made = None


cdef bint _same_objects(tuple a, tuple b):
    """a[k] is b[k] for every k (equal lengths)."""
    cdef Py_ssize_t k
    for k in range(len(a)):
        if a[k] is not b[k]:
            return False
    return True


cdef uintptr_t _address(a) except 0:
    """The first element of the C-contiguous array (or memoryview) a, which the caller keeps alive."""
    arr = np.asarray(a)
    if not arr.flags.c_contiguous:
        raise AssertionError("a plan's arrays are C-contiguous")
    return <uintptr_t>cnp.PyArray_DATA(arr)


cdef class _ForwardPlan:
    """What an X-Conv forward decides from its geometry alone, never from data: the path
    (Winograd, image columns, 1x1 quads or correlation tiles), its planes and tiling, and the
    term lists, held with raw pointers into them.  xconv2d_fwd keeps one beside the cached
    graph per geometry and settings (_forward_plan), so a repeated call goes straight to its
    kernels: the choices cost tens of microseconds, a small layer's kernel as much."""
    cdef int path, m
    cdef bint shared, direct
    cdef int64_t group, cstride, n_frames, rows3, a3, col_tiles, n_cb, wstride, tile, width, toff0
    cdef xk_layout_t lay
    cdef xk_quads_t qs
    cdef const xk_frame_t *frames
    cdef const xk_scatter_t *scatter
    cdef const int64_t *toff
    cdef const int64_t *ptr
    cdef const int64_t *chan
    cdef const int64_t *wrow
    cdef const int64_t *tap_ptr
    cdef object edges        # Winograd: the quads' edges (_wino_weights)
    cdef object keep         # the arrays the pointers point into

    def __init__(self, index, tuple geometry):
        (batch, n_in, height, width), x_strides, out_shape, out_strides, (n_out, degree, kh, kw), stride, padding, \
            dilation, itemsize = geometry
        cdef xk_image_t x_im, out_im
        x_im.img, x_im.chan, x_im.row, x_im.col = x_strides
        x_im.height, x_im.width = height, width
        out_im.img, out_im.chan, out_im.row, out_im.col = out_strides
        out_im.height, out_im.width = out_shape[2], out_shape[3]
        out_hw = (out_shape[2], out_shape[3])
        lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
        self.tile = XK_TILE_F32 if itemsize == 4 else XK_TILE_F64
        self.width = XK_SACC * lanes
        self.m = _winograd((kh, kw), stride, dilation, n_in, n_out, n_out * degree, out_hw, batch, itemsize,
                           "forward")
        if self.m:
            # stride-1 3x3: (m + 2)^2 1x1 correlations on Winograd-transformed panels, in quads
            self._quads(index, degree, n_out, n_in, _runs_shared(index))
            self.edges = _quad_edges(n_out, degree)
            self.path = PATH_WINOGRAD
            return
        if _columns((kh, kw), stride, n_in, out_hw, batch, itemsize, True):
            self.path = PATH_COLUMNS
            return
        planes = _forward_planes((kh, kw), stride, padding, dilation, out_hw, lanes)
        self.n_frames = len(planes.frames)
        self.group = _group(batch, n_in * self.n_frames * planes.hb * planes.wb * itemsize)
        # block expanders (index rows equal in runs of XK_SHARE): those outputs share every
        # vector load, except on stride-1 3x3, whose row tiles share loads between kernel rows
        self.shared = _runs_shared(index) and not planes.rows3
        # stride-1 3x3: tiles of XK_NACC / a3 grid rows (the shared-row path keeps flat tiles)
        self.rows3 = planes.rows3 if not self.shared else 0
        self.a3, self.col_tiles, length, self.cstride, toff = _tiling(planes, self.rows3, self.group, self.tile,
                                                                     itemsize, lanes)
        self.lay.hb, self.lay.wb, self.lay.len = planes.hb, planes.wb, length
        scatter = np.array([(0, out_im.img, out_im.row, out_im.col, 0, out_hw[0], 0, out_hw[1])], SCATTER_DTYPE)
        self.frames, self.toff = <const xk_frame_t *>_address(planes.frames), <const int64_t *>_address(toff)
        self.toff0 = toff[0]
        self.scatter = <const xk_scatter_t *>_address(scatter)
        self.keep = [planes, toff, scatter]
        if kh * kw == 1 and self.n_frames == 1 and (n_in + 1) * self.width * itemsize <= QUAD_PANEL_BYTES:
            # 1x1: quads of outputs read a panel of every channel, kept in cache (block
            # expanders: each quad is a run, its four outputs share every load)
            self._quads(index, degree, n_out, n_in, self.shared)
            self.direct = _in_place(stride, padding, &x_im, &out_im, self.width)
            self.path = PATH_QUADS
            return
        # the channels one channel block reads per tile (or, shared, per XK_SACC vectors of it)
        window = self.n_frames * ((XK_SACC * self.tile // XK_NACC if self.shared else self.tile)
                                  + max(planes.shift)) * itemsize
        share = XK_SHARE if self.shared else 1
        blocked = _cached_terms("forward", index, (n_in, window, share),
                                lambda: _forward_terms(np.asarray(index), n_in, window, share))
        tap_ptr = np.array([0, kh * kw], np.int64)
        self.ptr, self.chan = <const int64_t *>_address(blocked[0]), <const int64_t *>_address(blocked[1])
        self.wrow, self.n_cb = <const int64_t *>_address(blocked[2]), blocked[3]
        self.tap_ptr, self.wstride = <const int64_t *>_address(tap_ptr), kh * kw * share
        self.keep += [blocked, tap_ptr]
        self.path = PATH_CORRELATE

    def _quads(self, index, int64_t degree, int64_t n_dst, int64_t n_src, bint shared):
        """The quads (xk_quads_t) of index's n_dst outputs over n_src sources, in panels of width."""
        qoff = _cached_terms("quads", index, (n_src, self.width),
                             lambda: _quad_terms(np.asarray(index), n_src, self.width))[0]
        self.qs.off, self.qs.ptr, self.qs.rows = <const int32_t *>_address(qoff), NULL, NULL
        self.qs.degree, self.qs.n_dst, self.qs.n_src, self.qs.shared = degree, n_dst, n_src, shared
        self.keep = (self.keep or []) + [qoff]


cdef _ForwardPlan _forward_plan(index, tuple geometry):
    """The _ForwardPlan of index (Cout, D) and geometry: kept beside xkern.ops' cached copy of the
    graph (xkern.backends._graphs), or made afresh for an index that is not one."""
    plan = _graphs.table(index, ("forward plan", geometry, _settings()), lambda: _ForwardPlan(index, geometry))
    return plan if plan is not None else _ForwardPlan(index, geometry)


cdef int _host(a, str name, int ndim, int typenum, bint contiguous, bint writeable) except -1:
    """TypeError or ValueError naming the argument unless a is an aligned native-order ndarray
    of ndim dimensions and dtype typenum, C-contiguous and writeable where asked: what a typed
    memoryview checks, without exporting a buffer (numpy formats one for every fresh view)."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if cnp.PyArray_NDIM(a) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a):
        raise ValueError(f"{name} has dtype {a.dtype}, expected {cnp.PyArray_DescrFromType(typenum)}")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{name} is not aligned to its dtype")
    if contiguous and not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} is read-only")
    return 0


def xconv2d_fwd(x, weight, index, bias, out, stride, padding, dilation, int num_threads):
    """out (B, Cout, Ho, Wo) = X-Conv of x (B, Cin, H, W); weight (Cout, D, kh, kw), C-contiguous;
    index (Cout, D) int64, C-contiguous; bias (Cout,) or None; float32 or float64 ndarrays, x and
    out strided.  Stride-1 3x3 (_winograd) by Winograd, 1x1 in quads (xk_quad_tile), the rest
    in flat or row tiles (_ForwardPlan)."""
    cdef int typenum = cnp.NPY_DOUBLE if cnp.PyArray_Check(x) and cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE \
        else cnp.NPY_FLOAT
    _host(x, "x", 4, typenum, False, False)
    _host(weight, "weight", 4, typenum, True, False)
    _host(index, "index", 2, cnp.NPY_INT64, True, False)
    if bias is not None:
        _host(bias, "bias", 1, typenum, True, False)
    _host(out, "out", 4, typenum, False, True)
    if typenum == cnp.NPY_FLOAT:
        _forward(<const float *>cnp.PyArray_DATA(x), x, weight, index, bias, out, stride, padding, dilation,
                 _threads(num_threads))
    else:
        _forward(<const double *>cnp.PyArray_DATA(x), x, weight, index, bias, out, stride, padding, dilation,
                 _threads(num_threads))


cdef int _forward(const floating *x_ptr, x, weight, index, bias, out, stride, padding, dilation,
                  int n_chunks) except -1:
    """xconv2d_fwd on arrays _host checked, x_ptr x's data as floating, their dtype."""
    _check_forward(x, weight, index, bias, out, stride, padding, dilation)
    if cnp.PyArray_DIMS(x)[0] == 0:
        return 0
    cdef xk_image_t x_im = _image(<Py_ssize_t *>cnp.PyArray_DIMS(x), <Py_ssize_t *>cnp.PyArray_STRIDES(x),
                                  sizeof(floating))
    cdef xk_image_t out_im = _image(<Py_ssize_t *>cnp.PyArray_DIMS(out), <Py_ssize_t *>cnp.PyArray_STRIDES(out),
                                    sizeof(floating))
    return _run_forward(_plan_of(index, x, weight, out, stride, padding, dilation, sizeof(floating)), x_ptr,
                        &x_im, &out_im, x, weight, index, bias, out, stride, padding, dilation, n_chunks)


cdef int _check_forward(x, weight, index, bias, out, stride, padding, dilation) except -1:
    """ValueError naming the argument unless the _host-checked arrays fit the geometry."""
    cdef Py_ssize_t n_out = cnp.PyArray_DIMS(weight)[0]
    _check_conv(<Py_ssize_t *>cnp.PyArray_DIMS(x), <Py_ssize_t *>cnp.PyArray_DIMS(weight),
                <Py_ssize_t *>cnp.PyArray_DIMS(index), <Py_ssize_t *>cnp.PyArray_DIMS(out), stride, padding,
                dilation, ("x", "weight", "out"))
    if bias is not None and cnp.PyArray_DIMS(bias)[0] != n_out:
        raise ValueError(f"bias has length {cnp.PyArray_DIMS(bias)[0]}, weight has Cout = {n_out}")
    return 0


cdef _ForwardPlan _plan_of(index, x, weight, out, stride, padding, dilation, Py_ssize_t itemsize):
    """The _ForwardPlan (_forward_plan) of checked arrays of elements of itemsize bytes."""
    cdef Py_ssize_t *xd = <Py_ssize_t *>cnp.PyArray_DIMS(x)
    cdef Py_ssize_t *xs = <Py_ssize_t *>cnp.PyArray_STRIDES(x)
    cdef Py_ssize_t *od = <Py_ssize_t *>cnp.PyArray_DIMS(out)
    cdef Py_ssize_t *os = <Py_ssize_t *>cnp.PyArray_STRIDES(out)
    cdef Py_ssize_t *wd = <Py_ssize_t *>cnp.PyArray_DIMS(weight)
    return _forward_plan(index, (
        (xd[0], xd[1], xd[2], xd[3]), (xs[0] // itemsize, xs[1] // itemsize, xs[2] // itemsize, xs[3] // itemsize),
        (od[0], od[1], od[2], od[3]), (os[0] // itemsize, os[1] // itemsize, os[2] // itemsize, os[3] // itemsize),
        (wd[0], wd[1], wd[2], wd[3]), tuple(stride), tuple(padding), tuple(dilation), itemsize))


cdef int _run_forward(_ForwardPlan plan, const floating *x_ptr, const xk_image_t *x_im, const xk_image_t *out_im,
                      x, weight, index, bias, out, stride, padding, dilation, int n_chunks) except -1:
    """The forward of plan on checked arrays (batch >= 1) of its geometry, on n_chunks threads
    (one below SERIAL_MACS)."""
    cdef Py_ssize_t *w_shape = <Py_ssize_t *>cnp.PyArray_DIMS(weight)
    cdef int64_t batch = cnp.PyArray_DIMS(x)[0], n_in = cnp.PyArray_DIMS(x)[1]
    cdef int64_t n_out = w_shape[0], degree = w_shape[1]
    cdef const floating *bias_ptr = NULL
    if bias is not None:
        bias_ptr = <const floating *>cnp.PyArray_DATA(bias)
    if batch * n_out * degree * w_shape[2] * w_shape[3] * out_im.height * out_im.width < SERIAL_MACS:
        n_chunks = 1  # waking and splitting between threads costs more (the bits are the same)
    cdef floating *out_ptr = <floating *>cnp.PyArray_DATA(out)
    cdef const floating[::1] qw
    if plan.path == PATH_WINOGRAD:
        qw = _wino_weights(weight, plan.edges, False, plan.m, n_chunks)
        _wino_run(x_ptr, x_im, out_ptr, out_im, batch, <int64_t>padding[0], <int64_t>padding[1], plan.m,
                  &plan.qs, qw, bias_ptr, n_chunks)
        return 0
    if plan.path == PATH_COLUMNS:
        _columns_fwd(x, weight, index, bias, out, stride, padding, dilation, n_chunks)
        return 0
    dtype = np.float32 if floating is float else np.float64
    # the scratch arrays stay referenced here while the kernels write them
    packed_a = _scratch(0, n_chunks * n_in * plan.cstride, dtype)
    cdef floating *packed = <floating *>cnp.PyArray_DATA(packed_a)
    cdef floating *parts
    cdef floating *panels
    cdef const floating *w_ptr = <const floating *>cnp.PyArray_DATA(weight)
    if plan.path == PATH_QUADS:
        w_a = _quad_weights(weight)
        w_ptr = <const floating *>cnp.PyArray_DATA(w_a)
        parts_a = _scratch(1, n_chunks * n_out * (plan.width if plan.direct else plan.tile), dtype)
        panels_a = _scratch(2, n_chunks * (n_in + 1) * plan.width, dtype)
        parts, panels = <floating *>cnp.PyArray_DATA(parts_a), <floating *>cnp.PyArray_DATA(panels_a)
        with nogil:
            _whole_tiles(x_ptr, x_im, n_in, plan.frames, &plan.lay, plan.cstride, plan.toff0, batch,
                         plan.group, packed, parts, panels, NULL, &plan.qs, w_ptr, degree, bias_ptr,
                         out_ptr, out_im, n_out, plan.scatter, plan.direct, n_chunks)
        return 0
    if plan.shared:  # the weights interleaved by output
        w_a = _shared_weights(weight)
        w_ptr = <const floating *>cnp.PyArray_DATA(w_a)
    with nogil:
        _correlate(x_ptr, x_im, n_in, plan.frames, plan.n_frames, &plan.lay, plan.cstride, batch,
                   plan.group, packed, plan.ptr, plan.n_cb, plan.chan, plan.wrow, n_out, w_ptr, plan.wstride,
                   plan.shared, plan.tap_ptr, plan.toff, 1, plan.rows3, plan.a3, plan.col_tiles, bias_ptr,
                   out_ptr, out_im, plan.scatter, n_chunks)
    return 0


cdef class PreparedForward:
    """xconv2d_fwd for one geometry, checked once: x's shape, strides and dtype, weight's and
    bias's shapes, the graph (xkern.ops' cached copy, read-only, whose plan is kept beside it;
    a writeable index is copied), stride, padding and dilation.  A call checks only that its arrays have that geometry
    (C comparisons) and returns a new C-contiguous output, so that a small layer's call
    costs microseconds, not the tens a full check and plan lookup take."""
    cdef _ForwardPlan plan
    cdef object index, stride, padding, dilation, settings
    cdef int typenum
    cdef Py_ssize_t itemsize
    cdef bint has_bias
    cdef Py_ssize_t x_dims[4]
    cdef Py_ssize_t x_strides[4]
    cdef Py_ssize_t w_dims[4]
    cdef cnp.npy_intp out_dims[4]

    def __init__(self, x, weight, index, bias, stride, padding, dilation):
        self.typenum = cnp.NPY_DOUBLE if cnp.PyArray_Check(x) and cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE \
            else cnp.NPY_FLOAT
        self.itemsize = 8 if self.typenum == cnp.NPY_DOUBLE else 4
        _host(x, "x", 4, self.typenum, False, False)
        _host(weight, "weight", 4, self.typenum, True, False)
        _host(index, "index", 2, cnp.NPY_INT64, True, False)
        if bias is not None:
            _host(bias, "bias", 1, self.typenum, True, False)
        cdef Py_ssize_t *xd = <Py_ssize_t *>cnp.PyArray_DIMS(x)
        cdef Py_ssize_t *wd = <Py_ssize_t *>cnp.PyArray_DIMS(weight)
        try:
            (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
            ho = (xd[2] + 2 * ph - dh * (wd[2] - 1) - 1) // sh + 1
            wo = (xd[3] + 2 * pw - dw * (wd[3] - 1) - 1) // sw + 1
        except (TypeError, ValueError, ZeroDivisionError):
            _checks.check_geometry(stride, padding, dilation)  # raises, naming the argument
            raise
        out = np.empty((xd[0], wd[0], max(ho, 0), max(wo, 0)),
                       np.float64 if self.typenum == cnp.NPY_DOUBLE else np.float32)
        _check_forward(x, weight, index, bias, out, stride, padding, dilation)
        cdef int k
        for k in range(4):
            self.x_dims[k] = cnp.PyArray_DIMS(x)[k]
            self.x_strides[k] = cnp.PyArray_STRIDES(x)[k]
            self.w_dims[k] = cnp.PyArray_DIMS(weight)[k]
            self.out_dims[k] = cnp.PyArray_DIMS(out)[k]
        if cnp.PyArray_ISWRITEABLE(index):  # a caller's own graph: keep it as it is now
            index = np.array(index)
            index.setflags(write=False)
        self.index, self.has_bias = index, bias is not None
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self._plan(x, weight, out)

    cdef _plan(self, x, weight, out):
        self.settings = _settings()
        if self.x_dims[0]:
            self.plan = _plan_of(self.index, x, weight, out, self.stride, self.padding, self.dilation,
                                 self.itemsize)

    cdef bint _fits(self, x, weight, bias):
        """True when x, weight and bias have the prepared geometry (what _host and _check_conv
        checked when it was prepared)."""
        cdef int k
        if not (cnp.PyArray_Check(x) and cnp.PyArray_Check(weight)):
            return False
        if (cnp.PyArray_NDIM(x) != 4 or cnp.PyArray_TYPE(x) != self.typenum or not cnp.PyArray_ISNOTSWAPPED(x)
                or not cnp.PyArray_ISALIGNED(x) or cnp.PyArray_NDIM(weight) != 4
                or cnp.PyArray_TYPE(weight) != self.typenum or not cnp.PyArray_ISNOTSWAPPED(weight)
                or not cnp.PyArray_ISALIGNED(weight) or not cnp.PyArray_IS_C_CONTIGUOUS(weight)):
            return False
        for k in range(4):
            if (cnp.PyArray_DIMS(x)[k] != self.x_dims[k] or cnp.PyArray_STRIDES(x)[k] != self.x_strides[k]
                    or cnp.PyArray_DIMS(weight)[k] != self.w_dims[k]):
                return False
        if bias is None:
            return not self.has_bias
        return (self.has_bias and cnp.PyArray_Check(bias) and cnp.PyArray_NDIM(bias) == 1
                and cnp.PyArray_TYPE(bias) == self.typenum and cnp.PyArray_ISNOTSWAPPED(bias)
                and cnp.PyArray_ISALIGNED(bias) and cnp.PyArray_IS_C_CONTIGUOUS(bias)
                and cnp.PyArray_DIMS(bias)[0] == self.w_dims[0])

    def __call__(self, x, weight, bias, int num_threads):
        """The forward of x (B, Cin, H, W), weight and bias (or None) as a new (B, Cout, Ho, Wo)
        array, or None when they do not have the prepared geometry (the caller then takes
        xconv2d_fwd, which checks them and says what is wrong)."""
        if not self._fits(x, weight, bias):
            return None
        out = cnp.PyArray_EMPTY(4, self.out_dims, self.typenum, 0)
        if self.out_dims[0] == 0:
            return out
        if _settings() != self.settings:  # tests and tuning change them between calls
            self._plan(x, weight, out)
        cdef xk_image_t x_im = _image(<Py_ssize_t *>cnp.PyArray_DIMS(x), <Py_ssize_t *>cnp.PyArray_STRIDES(x),
                                      self.itemsize)
        cdef xk_image_t out_im = _image(<Py_ssize_t *>cnp.PyArray_DIMS(out), <Py_ssize_t *>cnp.PyArray_STRIDES(out),
                                        self.itemsize)
        if self.typenum == cnp.NPY_FLOAT:
            _run_forward(self.plan, <const float *>cnp.PyArray_DATA(x), &x_im, &out_im, x, weight, self.index, bias,
                         out, self.stride, self.padding, self.dilation, _threads(num_threads))
        else:
            _run_forward(self.plan, <const double *>cnp.PyArray_DATA(x), &x_im, &out_im, x, weight, self.index,
                         bias, out, self.stride, self.padding, self.dilation, _threads(num_threads))
        return out


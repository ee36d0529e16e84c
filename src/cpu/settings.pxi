# The tunable sizes and rules every planner reads, and what the module reports about its build.
# The runs behind each value are in BENCHMARKS.md, "What was tried on the CPU kernels".
# Change one by assigning a new value (the mappings are read-only): _settings() keys the
# plans on which objects these names hold.

# Forwards of fewer multiply-adds run on one thread whatever the thread count: below it, waking
# a second thread costs more than it saves.
SERIAL_MACS = 1 << 20
# Packed bytes per group of images (per thread): small enough to stay in L2
# between being packed and being read by the tiles.
PACK_BYTES = 1 << 20
# Bytes of the planes one channel block spans in a tile: the block's planes stay
# in L1 while up to XK_VBLOCK outputs read them.
BLOCK_BYTES = 16 << 10
# Fewest terms per output and block worth the store and reload of its partial sums.
BLOCK_TERMS = 8
# Most bytes of the panel (every source channel's XK_SACC vectors of a tile) with which 1x1
# forwards and grad_inputs take quads (xk_quad_tile): the panel must stay in cache while
# every destination reads it.  Best in L1 (up to ~330 channels), but quads beat the flat
# tiles from L2 too.
QUAD_PANEL_BYTES = 1 << 20
# The columns path (_columns): strided convs and maps of a few outputs (where the packed
# planes are mostly padding: a 3x3 map fills 9 of its 25 grid positions), as 1x1 quads over the image columns
# (one source row per channel and tap), the rows in blocks of COLUMNS_BLOCK_BYTES of panel
# so that each block stays in L1 while every quad reads it; image columns of at most
# COLUMNS_MAX_BYTES.  COLUMNS: "auto", "always" (where it applies: not Winograd) or "never".
COLUMNS = "auto"
COLUMNS_MAX_HW = 25
COLUMNS_MAX_STRIDED_HW = 784
COLUMNS_BLOCK_BYTES = 24 << 10
COLUMNS_MAX_BYTES = 64 << 20
# grad_weight by the columns path: positions per pass of the 1x1 dot products (their row
# blocks hold COLUMNS_BLOCK_BYTES), and the bytes of grad_out's rows (every output's stretch
# of a tile) that k x k kernels' tiles keep (in L2) while each channel's taps meet them.
COLUMNS_WGRAD_TILE = 256
COLUMNS_WGRAD_G_BYTES = 1 << 20
# Stride-1 1x1 grad_weights of random expanders on contiguous maps of DOTS_IN_PLACE_HW[0] to
# DOTS_IN_PLACE_HW[1] positions (whole vectors): xk_dot_columns on x and grad_out in place (each
# block of rows copied to an L1 panel), a whole map or COLUMNS_WGRAD_TILE positions per pass
# (_dots_in_place), instead of the packed planes (BENCHMARKS.md, "What was tried").  Block
# expanders keep the packed planes, whose runs share each load.
DOTS_IN_PLACE_HW = (64, 1024)

# Stride-1 3x3 convs by Winograd F(2x2, 3x3) (xk_wino_tile, _wino_tiles): "auto" takes it
# where it measured faster than the direct row tiles (_winograd), "always" for every
# stride-1 3x3 conv, "never" not at all.
WINOGRAD = "auto"
# The tile of m x m outputs: 0, the rule (_winograd) takes F(4x4, 3x3) where its tiles make
# WINO_MIN_PANELS[4] panels, its scratch fits and it transforms at most WINO_F4_VALUES (by
# itemsize) as many values as F(2x2, 3x3) (_wino_values), else F(2x2, 3x3); 2 or 4: that
# one wherever Winograd runs.  F(4x4) wins where it transforms clearly fewer values (28x28: 0.56
# of them), ties at 14x14 (0.73: its 4x4 tiles cover 16x16), and float64 needs the larger saving.
WINO_TILE = 0
WINO_F4_VALUES = MappingProxyType({4: 0.75, 8: 0.65})
# "auto": at least this many edges (Cout * D) per source channel and per destination
# channel (the transforms cost per channel, the products per edge) ...
WINO_MIN_TERMS = 12
# ... at least this many panels of tiles for each tile side m (with fewer than 4 per thread,
# _wino_tiles splits a panel's quads between threads, each transforming the panel again, so
# F(4x4), whose panels cost more, needs more of them) ...
WINO_MIN_PANELS = MappingProxyType({4: 6, 2: 1})
# ... whose tiles hold at least this fraction of real outputs, by pass (3x3 maps in 2x2 tiles
# hold 0.56: there the forward gains and grad_input loses, BENCHMARKS.md).  No rule looks at
# the thread count: a result's bits must not depend on it ...
WINO_MIN_COVER = MappingProxyType({"forward": 0.5, "grad_input": 0.6})
# ... and one thread's scratch ((m + 2)^2 transformed panels of the sources and as many of
# the destinations) at most this many bytes.
WINO_SCRATCH_BYTES = 4 << 20

# grad_weight by Winograd (_winograd_wgrad, _wino_wgrads): "auto" takes it for float32 (float64's
# transformed tiles are twice the bytes and gain nothing), with at least this many edges per
# source and per destination channel ...
WINO_WGRAD_TERMS = 12
# ... and at least this many partial sums (one per range of panels, each a thread's work) ...
WINO_WGRAD_MIN_PARTS = 2
# ... of which there are at most this many (so at most this many threads share the work), of
# at most this many bytes in all (never a function of the thread count: the sums add up in
# a fixed order, and the rule must not switch algorithms with it).
WINO_WGRAD_PARTS = 8
WINO_WGRAD_ACC_BYTES = 8 << 20
# "auto" takes F(4x4, 3x3) for grad_weight (the dot products read the transformed tiles from
# L2: 36 values per 4x4 tile) where it reads at most this fraction of F(2x2, 3x3)'s values
# (16 per 2x2 tile): it wins at 28x28 (0.56), ties at 14x14 (0.73).
WINO_WGRAD_F4_VALUES = 0.65

FRAME_DTYPE = np.dtype([("step_y", np.int64), ("step_x", np.int64),
                        ("off_y", np.int64), ("off_x", np.int64)])
SCATTER_DTYPE = np.dtype([(name, np.int64) for name in
                          ("origin", "img", "row", "col", "r_lo", "r_hi", "c_lo", "c_hi")])


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(XK_OPENMP_ENABLED)


cdef extern from "simd.h" nogil:
    const char *xk_isa()


def isa():
    """The instruction set the kernels run with on this CPU (e.g. "AVX2 + FMA (x86-64-v3)")."""
    return xk_isa().decode()


def max_threads():
    """OpenMP's default team size for this thread (1 without OpenMP)."""
    return xk_omp_max_threads()

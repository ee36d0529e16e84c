/* Body of cpu_kernels.h for one element type; no include guard on purpose.
 * Expects XK_T (element), XK_V (its vector), XK_VL (lanes), XK_TILE (grid
 * positions per tile, a multiple of 2 * XK_VL) and XK_FN(name) (suffixed name).
 * The kernels by family, each family after those it calls. */
#include "kernels/pack_impl.h"
#include "kernels/corr_impl.h"
#include "kernels/panel_impl.h"
#include "kernels/quads_impl.h"
#include "kernels/columns_impl.h"
#include "kernels/dots_impl.h"
#include "kernels/reduce_impl.h"

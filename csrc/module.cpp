// Python face of the native kernels: layerscope._C.
//
// Inputs arrive through the buffer protocol (NumPy arrays, e.g. ``tensor.numpy()``; bfloat16 as the
// int16 view of its storage plus a dtype tag), zero-copy and with their strides. Outputs are NumPy
// arrays allocated here. The GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "buffers.hpp"
#include "histogram.hpp"
#include "reduce.hpp"
#include "scan.hpp"
#include "state.hpp"

namespace py = pybind11;

namespace ls {

DType parse_dtype(const std::string& name) {
    if (name == "float32") return DType::f32;
    if (name == "float64") return DType::f64;
    if (name == "float16") return DType::f16;
    if (name == "bfloat16") return DType::bf16;
    throw std::invalid_argument("layerscope._C: unsupported dtype '" + name +
                                "' (float32, float64, float16 or bfloat16)");
}

std::size_t dtype_size(DType dt) { return dt == DType::f64 ? 8 : dt == DType::f32 ? 4 : 2; }

namespace {

py::buffer_info request(const py::buffer& buf, DType dt, py::ssize_t ndim, const char* what) {
    py::buffer_info info = buf.request();
    if (info.ndim != ndim)
        throw std::invalid_argument(std::string(what) + ": expected " + std::to_string(ndim) + " dims, got " +
                                    std::to_string(info.ndim));
    if (static_cast<std::size_t>(info.itemsize) != dtype_size(dt))
        throw std::invalid_argument(std::string(what) + ": item size " + std::to_string(info.itemsize) +
                                    " does not match the dtype tag");
    for (auto s : info.strides)
        if (s % info.itemsize != 0) throw std::invalid_argument(std::string(what) + ": misaligned strides");
    return info;
}

bool c_contiguous(const py::buffer_info& info) {
    py::ssize_t expected = info.itemsize;
    for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
        if (info.shape[d] != 1 && info.strides[d] != expected) return false;
        expected *= info.shape[d];
    }
    return true;
}

py::buffer_info request_contiguous(const py::buffer& buf, DType dt, py::ssize_t ndim, const char* what) {
    py::buffer_info info = request(buf, dt, ndim, what);
    if (!c_contiguous(info)) throw std::invalid_argument(std::string(what) + ": must be C-contiguous");
    return info;
}


// A C-contiguous array on a buffer from the cache of large buffers (see buffers.hpp).
template <class T>
py::array_t<T> cached_array(const std::vector<py::ssize_t>& shape) {
    std::size_t count = 1;
    for (auto d : shape) count *= static_cast<std::size_t>(d);
    const std::size_t bytes = count * sizeof(T);
    void* p = acquire_buffer(bytes);
    // The size travels in the capsule's context: the deleter gives the buffer back to the cache.
    py::capsule owner(p, nullptr, [](PyObject* cap) {
        void* q = PyCapsule_GetPointer(cap, nullptr);
        release_buffer(q, reinterpret_cast<std::size_t>(PyCapsule_GetContext(cap)));
    });
    PyCapsule_SetContext(owner.ptr(), reinterpret_cast<void*>(bytes));
    return py::array_t<T>(shape, static_cast<T*>(p), owner);
}

// A C-contiguous, writable NumPy array of T over data, kept alive by owner: NumPy's constructor called
// with the shape on the stack (pybind11's array_t constructor allocates a shape and a strides vector,
// twenty allocations for channel_reduce's ten arrays per call).
template <class T>
py::array view_of(T* data, std::initializer_list<py::ssize_t> shape, const py::object& owner) {
    Py_intptr_t dims[2];
    if (shape.size() > 2) throw std::logic_error("view_of: at most two dimensions");
    int nd = 0;
    for (const py::ssize_t d : shape) dims[nd++] = static_cast<Py_intptr_t>(d);
    auto& api = py::detail::npy_api::get();
    PyObject* arr = api.PyArray_NewFromDescr_(api.PyArray_Type_, py::dtype::of<T>().release().ptr(), nd, dims,
                                              nullptr, data, py::detail::npy_api::NPY_ARRAY_WRITEABLE_, nullptr);
    if (arr == nullptr) throw py::error_already_set();
    auto out = py::reinterpret_steal<py::array>(arr);
    if (api.PyArray_SetBaseObject_(arr, owner.inc_ref().ptr()) != 0) throw py::error_already_set();
    return out;
}

template <class T>
py::array_t<T> empty(std::vector<py::ssize_t> shape) {
    return cached_array<T>(shape);
}

// Per-channel statistics of x ([N, C, S], any strides) as a tuple in ChannelStats field order (count, mean, m2, min, max, zeros, above,
// nan, inf, sample_mean), all ten arrays views of ONE cached buffer: one allocation and no dict per call.
py::tuple channel_reduce_py(const py::buffer& x, const std::string& dtype,
                                  const py::array_t<double, py::array::c_style | py::array::forcecast>& thresholds,
                                  int threads, const py::object& hist) {
    const DType dt = parse_dtype(dtype);
    const py::buffer_info info = request(x, dt, 3, "channel_reduce: x [N, C, S]");
    const i64 n = info.shape[0], c = info.shape[1], s = info.shape[2];
    const i64 item = info.itemsize;
    const Strided3 view{info.ptr, dt, n, c, s, info.strides[0] / item, info.strides[1] / item,
                        info.strides[2] / item};
    const int num_thr = static_cast<int>(thresholds.size());
    const std::size_t bytes = reduce_out_bytes(n, c, num_thr);
    void* p = acquire_buffer(bytes);
    py::capsule owner(p, nullptr, [](PyObject* cap) {
        void* q = PyCapsule_GetPointer(cap, nullptr);
        release_buffer(q, reinterpret_cast<std::size_t>(PyCapsule_GetContext(cap)));
    });
    PyCapsule_SetContext(owner.ptr(), reinterpret_cast<void*>(bytes));
    const ReduceOut out = reduce_out_at(p, c, num_thr);
    const double* thr = thresholds.data();
    // the fused histogram: hist = (e, j0, bins) of a power-of-two grid, or None
    Pow2Counter grid{0, 0, 0};
    py::object counts = py::none();
    i64* hist_counts = nullptr;
    if (!hist.is_none()) {
        const auto g = hist.cast<std::tuple<int, i64, i64>>();
        grid = Pow2Counter{std::get<0>(g), std::get<1>(g), std::get<2>(g)};
        check_pow2_grid(grid.e, grid.j0, grid.bins);
        auto arr = empty<i64>({grid.bins + 2});
        std::fill_n(arr.mutable_data(), grid.bins + 2, i64(0));
        hist_counts = arr.mutable_data();
        counts = arr;
    }
    {
        py::gil_scoped_release release;
        channel_reduce(view, thr, num_thr, out, threads, hist_counts ? &grid : nullptr, hist_counts);
    }
    const auto ints = [&](i64* q) { return view_of(q, {c}, owner); };
    const auto floats = [&](double* q) { return view_of(q, {c}, owner); };
    return py::make_tuple(ints(out.count), floats(out.mean), floats(out.m2), floats(out.min), floats(out.max),
                          ints(out.zeros), view_of(out.above, {static_cast<py::ssize_t>(num_thr), c}, owner),
                          ints(out.nan), ints(out.inf), view_of(out.sample_mean, {n, c}, owner), counts);
}

py::array histogram_py(const py::buffer& x, const std::string& dtype, i64 bins, double lo, double hi,
                       int threads) {
    const DType dt = parse_dtype(dtype);
    const py::buffer_info info = request_contiguous(x, dt, 1, "histogram: x");
    if (bins < 1) throw std::invalid_argument("histogram: bins must be >= 1");
    if (!(lo < hi) || !std::isfinite(hi - lo))
        throw std::invalid_argument("histogram: need finite lo < hi");
    auto counts = empty<i64>({bins});
    std::fill_n(counts.mutable_data(), bins, i64(0));
    i64* out = counts.mutable_data();
    {
        py::gil_scoped_release release;
        histogram(info.ptr, dt, info.shape[0], bins, lo, hi, out, threads);
    }
    return counts;
}

py::array histogram_pow2_py(const py::buffer& x, const std::string& dtype, int e, i64 j0, i64 bins,
                            int threads) {
    const DType dt = parse_dtype(dtype);
    const py::buffer_info info = request_contiguous(x, dt, 1, "histogram_pow2: x");
    if (bins < 1) throw std::invalid_argument("histogram_pow2: bins must be >= 1");
    auto counts = empty<i64>({bins + 2});
    std::fill_n(counts.mutable_data(), bins + 2, i64(0));
    i64* out = counts.mutable_data();
    {
        py::gil_scoped_release release;
        histogram_pow2(info.ptr, dt, info.shape[0], e, j0, bins, out, threads);
    }
    return counts;
}

// Accumulation-type array (float64 for float64 inputs, float32 otherwise), on a cached buffer.
py::array acc_array(DType dt, std::vector<py::ssize_t> shape) {
    if (dt == DType::f64) return cached_array<double>(shape);
    return cached_array<float>(shape);
}

const void* optional_state(const py::object& h0, DType dt, i64 b, i64 d) {
    if (h0.is_none()) return nullptr;
    const DType acc = dt == DType::f64 ? DType::f64 : DType::f32;
    const py::buffer_info info = request_contiguous(h0.cast<py::buffer>(), acc, 2, "scan: h0 [B, D]");
    if (info.shape[0] != b || info.shape[1] != d) throw std::invalid_argument("scan: h0 must be [B, D]");
    return info.ptr;
}

py::array scan_forward_py(const py::buffer& a, const py::buffer& b, const py::object& h0,
                          const std::string& dtype, int threads) {
    const DType dt = parse_dtype(dtype);
    const py::buffer_info ia = request_contiguous(a, dt, 3, "scan: a [B, T, D]");
    const py::buffer_info ib = request_contiguous(b, dt, 3, "scan: b [B, T, D]");
    if (ia.shape != ib.shape) throw std::invalid_argument("scan: a and b must have the same shape");
    const i64 B = ia.shape[0], T = ia.shape[1], D = ia.shape[2];
    const void* h0p = optional_state(h0, dt, B, D);
    py::array h = acc_array(dt, {B, T, D});
    void* hp = h.mutable_data();
    {
        py::gil_scoped_release release;
        scan_forward(ia.ptr, ib.ptr, dt, h0p, hp, B, T, D, threads);
    }
    return h;
}

py::tuple scan_backward_py(const py::buffer& a, const py::buffer& h, const py::object& h0,
                           const py::buffer& grad_h, const std::string& dtype, int threads) {
    const DType dt = parse_dtype(dtype);
    const DType acc = dt == DType::f64 ? DType::f64 : DType::f32;
    const py::buffer_info ia = request_contiguous(a, dt, 3, "scan: a [B, T, D]");
    const py::buffer_info ih = request_contiguous(h, acc, 3, "scan: h [B, T, D]");
    const py::buffer_info ig = request_contiguous(grad_h, dt, 3, "scan: grad_h [B, T, D]");
    if (ia.shape != ih.shape || ia.shape != ig.shape)
        throw std::invalid_argument("scan: a, h and grad_h must have the same shape");
    const i64 B = ia.shape[0], T = ia.shape[1], D = ia.shape[2];
    const void* h0p = optional_state(h0, dt, B, D);
    py::array ga = acc_array(dt, {B, T, D}), gb = acc_array(dt, {B, T, D});
    py::object gh0 = py::none();
    void* gh0p = nullptr;
    if (h0p) {
        py::array g = acc_array(dt, {B, D});
        gh0p = g.mutable_data();
        gh0 = g;
    }
    void* gap = ga.mutable_data();
    void* gbp = gb.mutable_data();
    {
        py::gil_scoped_release release;
        scan_backward(ia.ptr, ih.ptr, h0p, ig.ptr, dt, gap, gbp, gh0p, B, T, D, threads);
    }
    return py::make_tuple(ga, gb, gh0);
}

// -- in-place accumulator state (state.hpp) -------------------------------------------------------
// State arrays are updated in place, so they must be NumPy arrays of the exact dtype, C-contiguous
// and writable (never a converted copy: the update would be lost).

std::string shape_str(const py::ssize_t* shape, py::ssize_t ndim) {
    std::string s = "[";
    for (py::ssize_t d = 0; d < ndim; ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
    return s + "]";
}

template <class T>
const char* numpy_name() {
    return std::is_same<T, bool>::value ? "bool" : std::is_same<T, double>::value ? "float64" : "int64";
}

// Data pointer of `obj`, checked: a C-contiguous T array of `shape`, writable when `writable`.
template <class T>
void* state_array(const py::handle& obj, std::vector<py::ssize_t> shape, bool writable, const std::string& what) {
    const std::string expect = "a C-contiguous " + std::string(numpy_name<T>()) + " NumPy array of shape " +
                               shape_str(shape.data(), static_cast<py::ssize_t>(shape.size()));
    if (!py::isinstance<py::array_t<T>>(obj)) throw std::invalid_argument(what + ": expected " + expect);
    const auto a = py::reinterpret_borrow<py::array>(obj);
    const bool same_shape = a.ndim() == static_cast<py::ssize_t>(shape.size()) &&
                            std::equal(shape.begin(), shape.end(), a.shape());
    if (!same_shape || !(a.flags() & py::array::c_style))
        throw std::invalid_argument(what + ": expected " + expect + ", got shape " + shape_str(a.shape(), a.ndim()) +
                                    (same_shape ? " (not C-contiguous)" : ""));
    if (writable && !a.writeable()) throw std::invalid_argument(what + ": the array is read-only");
    return const_cast<void*>(a.data());
}

// [N, C] float32 / float64 neuron values, any strides.
NeuronValues neuron_values(const py::array& a) {
    const bool f64 = py::isinstance<py::array_t<double>>(a), f32 = py::isinstance<py::array_t<float>>(a);
    if (!(f64 || f32) || a.ndim() != 2)
        throw std::invalid_argument("coverage_update: values must be a 2-D float32 or float64 array [N, C]");
    const py::ssize_t item = a.itemsize();
    if (a.strides(0) % item || a.strides(1) % item)
        throw std::invalid_argument("coverage_update: values: misaligned strides");
    return {a.data(), f64 ? DType::f64 : DType::f32, a.shape(0), a.shape(1), a.strides(0) / item,
            a.strides(1) / item};
}

// Reference ranges and their hit sets: (range_low [C], range_high [C], kmnc_hits [C, k], lower_hits [C],
// upper_hits [C]).
CoverageRanges coverage_ranges(const py::tuple& r, i64 c) {
    if (r.size() != 5)
        throw std::invalid_argument("coverage_update: ranges must be (range_low, range_high, kmnc_hits, "
                                    "lower_hits, upper_hits)");
    const py::array kmnc = r[2].cast<py::array>();
    const i64 k = kmnc.ndim() == 2 ? kmnc.shape(1) : 0;
    if (k < 1) throw std::invalid_argument("coverage_update: kmnc_hits must be [C, k] with k >= 1");
    const std::string w = "coverage_update: ";
    return {static_cast<const double*>(state_array<double>(r[0], {c}, false, w + "range_low")),
            static_cast<const double*>(state_array<double>(r[1], {c}, false, w + "range_high")), k,
            static_cast<u8*>(state_array<bool>(r[2], {c, k}, true, w + "kmnc_hits")),
            static_cast<u8*>(state_array<bool>(r[3], {c}, true, w + "lower_hits")),
            static_cast<u8*>(state_array<bool>(r[4], {c}, true, w + "upper_hits"))};
}

void coverage_update_py(const py::array& values, const py::array& taus, i64 top_k, const py::handle& nc_hits,
                        const py::handle& topk_hits, const py::handle& low, const py::handle& high,
                        const py::handle& skipped, const py::object& ranges, int threads) {
    const NeuronValues v = neuron_values(values);
    if (top_k < 1) throw std::invalid_argument("coverage_update: top_k must be >= 1");
    const std::string w = "coverage_update: ";
    const i64 t = taus.ndim() == 1 ? taus.shape(0) : -1;
    const auto* tau = static_cast<const double*>(state_array<double>(taus, {t}, false, w + "taus [T]"));
    const CoverageState state{static_cast<u8*>(state_array<bool>(nc_hits, {t, v.c}, true, w + "nc_hits")),
                              static_cast<u8*>(state_array<bool>(topk_hits, {v.c}, true, w + "topk_hits")),
                              static_cast<double*>(state_array<double>(low, {v.c}, true, w + "low")),
                              static_cast<double*>(state_array<double>(high, {v.c}, true, w + "high")),
                              static_cast<i64*>(state_array<i64>(skipped, {v.c}, true, w + "skipped"))};
    CoverageRanges r{};
    if (!ranges.is_none()) r = coverage_ranges(ranges.cast<py::tuple>(), v.c);
    py::gil_scoped_release release;
    coverage_update(v, tau, t, top_k, state, ranges.is_none() ? nullptr : &r, threads);
}

// ChannelStats fields without sample_mean, in that order: count, mean, m2, min, max, zeros, above [T, C], nan, inf.
template <class I, class F>
MomentFields<I, F> moment_fields(const py::tuple& f, i64 c, i64 t, bool writable, const std::string& what) {
    if (f.size() != 9)
        throw std::invalid_argument(what + ": expected 9 arrays (count, mean, m2, min, max, zeros, above, nan, inf)");
    const auto ints = [&](std::size_t i, const char* name, std::vector<py::ssize_t> shape) {
        return static_cast<I*>(state_array<i64>(f[i], std::move(shape), writable, what + "." + name));
    };
    const auto floats = [&](std::size_t i, const char* name) {
        return static_cast<F*>(state_array<double>(f[i], {c}, writable, what + "." + name));
    };
    return {ints(0, "count", {c}), floats(1, "mean"), floats(2, "m2"), floats(3, "min"), floats(4, "max"),
            ints(5, "zeros", {c}), ints(6, "above", {t, c}), ints(7, "nan", {c}), ints(8, "inf", {c})};
}

void moments_merge_py(const py::tuple& state, const py::tuple& part) {
    if (state.size() != 9) throw std::invalid_argument("moments_merge: state must hold 9 arrays");
    const py::array count = state[0].cast<py::array>(), above = state[6].cast<py::array>();
    const i64 c = count.ndim() == 1 ? count.shape(0) : -1, t = above.ndim() == 2 ? above.shape(0) : -1;
    const MomentState s = moment_fields<i64, double>(state, c, t, true, "moments_merge: state");
    const MomentPart p = moment_fields<const i64, const double>(part, c, t, false, "moments_merge: part");
    py::gil_scoped_release release;
    moments_merge(s, p, c, t);
}

py::dict build_info() {
    py::dict d;
#ifdef _OPENMP
    d["openmp"] = true;
    d["openmp_version"] = _OPENMP;
    d["omp_max_threads"] = omp_get_max_threads();
#else
    d["openmp"] = false;
    d["openmp_version"] = 0;
    d["omp_max_threads"] = 1;
#endif
#if defined(__AVX512F__)
    d["simd"] = "avx512";
#elif defined(__AVX2__)
    d["simd"] = "avx2";
#elif defined(__SSE2__)
    d["simd"] = "sse2";
#elif defined(__ARM_NEON)
    d["simd"] = "neon";
#else
    d["simd"] = "none";
#endif
    d["simd_clones"] = LS_CLONE_TARGETS;  // hot loops also built for these, picked at load time
#ifdef __VERSION__
    d["compiler"] = __VERSION__;
#endif
    return d;
}

}  // namespace
}  // namespace ls

PYBIND11_MODULE(_C, m) {
    m.doc() = "layerscope native kernels (C++17, OpenMP): fused channel reduction, histogram, linear scan, "
              "in-place accumulator updates (coverage, moments merge)";
    m.def("channel_reduce", &ls::channel_reduce_py, py::arg("x"), py::arg("dtype"), py::arg("thresholds"),
          py::arg("threads"), py::arg("hist") = py::none(),
          "Per-channel statistics of x, a 3-D buffer read as [N, C, S] with any strides: a tuple in "
          "ChannelStats field order (views of one buffer), then the counts [bins + 2] of every value on "
          "the power-of-two grid hist = (e, j0, bins) as histogram_pow2 gives them, or None.");
    m.def("histogram", &ls::histogram_py, py::arg("x"), py::arg("dtype"), py::arg("bins"), py::arg("lo"),
          py::arg("hi"), py::arg("threads"), "int64 counts of the values of a 1-D contiguous buffer.");
    m.def("histogram_pow2", &ls::histogram_pow2_py, py::arg("x"), py::arg("dtype"), py::arg("e"), py::arg("j0"),
          py::arg("bins"), py::arg("threads"),
          "int64 [bins + 2]: counts of floor(x * 2**-e) - j0 in [0, bins), then finite values below, above.");
    m.def("scan_forward", &ls::scan_forward_py, py::arg("a"), py::arg("b"), py::arg("h0"), py::arg("dtype"),
          py::arg("threads"), "h_t = a_t * h_{t-1} + b_t over [B, T, D] (C-contiguous).");
    m.def("scan_backward", &ls::scan_backward_py, py::arg("a"), py::arg("h"), py::arg("h0"),
          py::arg("grad_h"), py::arg("dtype"), py::arg("threads"),
          "(grad_a, grad_b, grad_h0) of the linear scan.");
    m.def("coverage_update", &ls::coverage_update_py, py::arg("values").noconvert(), py::arg("taus").noconvert(),
          py::arg("top_k"), py::arg("nc_hits"), py::arg("topk_hits"), py::arg("low"), py::arg("high"),
          py::arg("skipped"), py::arg("ranges"), py::arg("threads") = 1,
          "Fold neuron values [N, C] into coverage state in place (NC, TKNC, observed ranges, skipped; "
          "with ranges = (range_low, range_high, kmnc_hits, lower_hits, upper_hits) also KMNC/NBC/SNAC); "
          "a large batch's samples split over up to `threads` threads (the same state for any count).");
    m.def("moments_merge", &ls::moments_merge_py, py::arg("state"), py::arg("part"),
          "Fold a ChannelStats partial into moments state in place (Chan et al. 1979); each a tuple of "
          "(count, mean, m2, min, max, zeros, above, nan, inf).");
    m.def("trim_buffers", &ls::trim_buffers, "Free the cached output buffers; returns the bytes freed.");
    m.def("cached_bytes", &ls::cached_bytes, "Bytes held in the cache of output buffers.");
    m.def("build_info", &ls::build_info, "How the extension was compiled (OpenMP, SIMD baseline, compiler).");
}

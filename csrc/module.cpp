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
#include <vector>

#include "buffers.hpp"
#include "histogram.hpp"
#include "reduce.hpp"
#include "scan.hpp"

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

template <class T>
py::array_t<T> empty(std::vector<py::ssize_t> shape) {
    return cached_array<T>(shape);
}

// Per-channel statistics of x ([N, C, S], any strides) as a tuple in ChannelStats field order (count, mean, m2, min, max, zeros, above,
// nan, inf, sample_mean), all ten arrays views of ONE cached buffer: one allocation and no dict per call.
py::tuple channel_reduce_py(const py::buffer& x, const std::string& dtype,
                                  const py::array_t<double, py::array::c_style | py::array::forcecast>& thresholds,
                                  int threads) {
    const DType dt = parse_dtype(dtype);
    const py::buffer_info info = request(x, dt, 3, "channel_reduce: x [N, C, S]");
    const i64 n = info.shape[0], c = info.shape[1], s = info.shape[2];
    const i64 item = info.itemsize;
    const Strided3 view{info.ptr, dt, n, c, s, info.strides[0] / item, info.strides[1] / item,
                        info.strides[2] / item};
    const int num_thr = static_cast<int>(thresholds.size());
    // 8-byte cells: count, zeros, nan, inf [C] | above [T, C] | mean, m2, min, max [C] | sample_mean [N, C]
    const std::size_t cells = static_cast<std::size_t>(c) * (8 + num_thr + n);
    const std::size_t bytes = cells * 8;
    void* p = acquire_buffer(bytes);
    py::capsule owner(p, nullptr, [](PyObject* cap) {
        void* q = PyCapsule_GetPointer(cap, nullptr);
        release_buffer(q, reinterpret_cast<std::size_t>(PyCapsule_GetContext(cap)));
    });
    PyCapsule_SetContext(owner.ptr(), reinterpret_cast<void*>(bytes));
    i64* ip = static_cast<i64*>(p);
    double* fp = reinterpret_cast<double*>(ip + c * (4 + num_thr));
    const ReduceOut out{ip, fp, fp + c, fp + 2 * c, fp + 3 * c, ip + c, ip + 4 * c, ip + 2 * c, ip + 3 * c,
                        fp + 4 * c};
    const double* thr = thresholds.data();
    {
        py::gil_scoped_release release;
        channel_reduce(view, thr, num_thr, out, threads);
    }
    const auto ints = [&](i64* q) { return py::array_t<i64>({c}, q, owner); };
    const auto floats = [&](double* q) { return py::array_t<double>({c}, q, owner); };
    return py::make_tuple(ints(out.count), floats(out.mean), floats(out.m2), floats(out.min), floats(out.max),
                          ints(out.zeros), py::array_t<i64>({static_cast<i64>(num_thr), c}, out.above, owner),
                          ints(out.nan), ints(out.inf), py::array_t<double>({n, c}, out.sample_mean, owner));
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
    m.doc() = "layerscope native kernels (C++17, OpenMP): fused channel reduction, histogram, linear scan";
    m.def("channel_reduce", &ls::channel_reduce_py, py::arg("x"), py::arg("dtype"), py::arg("thresholds"),
          py::arg("threads"),
          "Per-channel statistics of x, a 3-D buffer read as [N, C, S] with any strides: a tuple in "
          "ChannelStats field order, views of one buffer.");
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
    m.def("trim_buffers", &ls::trim_buffers, "Free the cached output buffers; returns the bytes freed.");
    m.def("cached_bytes", &ls::cached_bytes, "Bytes held in the cache of output buffers.");
    m.def("build_info", &ls::build_info, "How the extension was compiled (OpenMP, SIMD baseline, compiler).");
}

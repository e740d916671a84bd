// Shared pieces of the native kernels: element types, half-precision loads, OpenMP helpers.
//
// No pybind11 and no torch here: the kernels see raw pointers and element strides only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

// Hot loops are compiled for AVX-512, AVX2 and the baseline ISA and picked at load time (GCC/Clang
// function multi-versioning through ifuncs: x86-64 Linux). Portable: no -march=native needed.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(LS_NO_CLONES)
#define LS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define LS_CLONE_TARGETS "avx512f,avx2,default"
#else
#define LS_CLONES
#define LS_CLONE_TARGETS ""
#endif
// plain C entries of _C called through ctypes (src/layerscope/kernels/_native_accumulate.py)
#if defined(_WIN32)
#define LS_EXPORT __declspec(dllexport)
#else
#define LS_EXPORT __attribute__((visibility("default")))
#endif
#if defined(__GNUC__)
#define LS_INLINE inline __attribute__((always_inline))
#else
#define LS_INLINE inline
#endif

namespace ls {

using i64 = std::int64_t;

// Storage types of the inputs. Half types travel as their raw 16 bits.
enum class DType { f32, f64, f16, bf16 };

DType parse_dtype(const std::string& name);   // "float32" | "float64" | "float16" | "bfloat16"
std::size_t dtype_size(DType dt);

struct f16 { std::uint16_t bits; };
struct bf16 { std::uint16_t bits; };

inline float bits_to_float(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// bfloat16 is the upper half of a float32.
inline float to_float(bf16 h) { return bits_to_float(static_cast<std::uint32_t>(h.bits) << 16); }

// IEEE binary16 → binary32, exact, branch-free on the common path (after F. Giesen,
// "half to float done quic", 2012): shift exponent+mantissa into place, rebias, then fix Inf/NaN
// and subnormals.
inline float to_float(f16 h) {
    const std::uint32_t magic_bits = 113u << 23;  // 2**-14 as float: the smallest normal half
    const std::uint32_t shifted_exp = 0x7c00u << 13;
    std::uint32_t o = (static_cast<std::uint32_t>(h.bits) & 0x7fffu) << 13;
    const std::uint32_t exp = shifted_exp & o;
    o += (127u - 15u) << 23;
    if (exp == shifted_exp) {
        o += (128u - 16u) << 23;  // Inf / NaN keep their payload
    } else if (exp == 0) {
        o += 1u << 23;  // subnormal: renormalise through a float subtraction (exact)
        float f = bits_to_float(o) - bits_to_float(magic_bits);
        std::memcpy(&o, &f, sizeof o);
    }
    o |= (static_cast<std::uint32_t>(h.bits) & 0x8000u) << 16;
    return bits_to_float(o);
}

inline float to_float(float x) { return x; }
inline double to_float(double x) { return x; }

// The arithmetic type of an input type: float64 stays float64, everything else computes in float32
// (block sums and moments are float64 in every case).
template <class In> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <class In> using acc_t = typename Acc<In>::type;

// Calls f(tag) with a value of the C++ element type named by dt.
template <class F>
decltype(auto) dispatch(DType dt, F&& f) {
    switch (dt) {
        case DType::f32: return f(float{});
        case DType::f64: return f(double{});
        case DType::f16: return f(f16{});
        default: return f(bf16{});
    }
}

inline int clamp_threads(int n) { return n < 1 ? 1 : n; }

// An exception may not leave an OpenMP region (that aborts the process): catch it inside, keep the
// first one, and rethrow it after the region, where pybind11 turns it into a Python exception.
class FirstError {
public:
    template <class F>
    void run(F&& f) noexcept {
        try {
            f();
        } catch (...) {
            std::lock_guard<std::mutex> guard(lock_);
            if (!error_) error_ = std::current_exception();
        }
    }
    void rethrow() const {
        if (error_) std::rethrow_exception(error_);
    }
    // Whether an error was caught: read after a barrier that follows every run, all threads agree.
    bool failed() const { return static_cast<bool>(error_); }

private:
    std::mutex lock_;
    std::exception_ptr error_;
};

// [begin, end) of `total` items for part `part` of `parts` (contiguous, balanced).
inline void split_range(i64 total, int parts, int part, i64& begin, i64& end) {
    const i64 q = total / parts, r = total % parts;
    begin = part * q + (part < r ? part : r);
    end = begin + q + (part < r ? 1 : 0);
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// Cache lines fetched a line at a time while a kernel works through the block before them: `rows`
// rows of `row_bytes` bytes, `stride` bytes apart. The fused reduction points it at its next block,
// whose rows start on other pages (where the hardware prefetchers do not follow), and its slowest
// loop over this block (the histogram count, or pass 1) steps it once per 64 bytes it reads, so that
// the next block arrives while this one is computed instead of after it. A hot loop steps a local copy and stores it back
// after the loop: stepped through a reference, its pointer went through memory at every step (a
// store-to-load chain of several cycles per 64 bytes, measured as the slowest part of short runs).
class LineAhead {
public:
    void clear() { p_ = end_ = nullptr, rows_left_ = 0; }
    void set(const void* base, i64 rows, i64 stride, i64 row_bytes) {
        clear();
        if (rows <= 0 || row_bytes <= 0) return;
        row_ = static_cast<const char*>(base), rows_left_ = rows - 1, stride_ = stride, bytes_ = row_bytes;
        start_row();
    }
    LS_INLINE void step() {
        if (p_ >= end_) return;
        __builtin_prefetch(p_, 0, 3);
        p_ += 64;
        if (p_ >= end_ && rows_left_ > 0) --rows_left_, row_ += stride_, start_row();
    }

private:
    void start_row() {
        p_ = reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(row_) & ~std::uintptr_t(63));
        end_ = row_ + bytes_;
    }
    const char *p_ = nullptr, *end_ = nullptr, *row_ = nullptr;
    i64 rows_left_ = 0, stride_ = 0, bytes_ = 0;
};

}  // namespace ls

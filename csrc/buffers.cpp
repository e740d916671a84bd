#include "buffers.hpp"

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(_WIN32)
#include <malloc.h>
#endif

namespace ls {
namespace {

constexpr std::size_t kMinCached = std::size_t(1) << 16;   // smaller ones: malloc's own bins do well
constexpr std::size_t kHuge = std::size_t(1) << 21;        // 2 MiB: advise huge pages from here on
constexpr std::size_t kAlign = 64;

struct Cache {
    std::mutex lock;
    std::multimap<std::size_t, void*> free_blocks;  // size class → block
    std::size_t bytes = 0;
    std::size_t budget = budget_from_env();

    static std::size_t budget_from_env() {
        const char* env = std::getenv("LAYERSCOPE_NATIVE_CACHE_MB");
        const long mb = env ? std::strtol(env, nullptr, 10) : 256;
        return static_cast<std::size_t>(mb < 0 ? 0 : mb) << 20;
    }
};

Cache& cache() {
    static Cache* c = new Cache();  // never destroyed: buffers may be released during interpreter exit
    return *c;
}

// Size class: 64-byte multiples below 1 MiB, then 1/16 steps of the power of two (≤ 6% waste).
std::size_t size_class(std::size_t bytes) {
    std::size_t b = (bytes + kAlign - 1) / kAlign * kAlign;
    if (b < (std::size_t(1) << 20)) return b;
    std::size_t step = std::size_t(1) << 20;
    while (step * 32 <= b) step <<= 1;
    step /= 16;
    return (b + step - 1) / step * step;
}

#if defined(_WIN32)
void* aligned(std::size_t size) { return _aligned_malloc(size, kAlign); }
void aligned_free(void* p) { _aligned_free(p); }
#else
void* aligned(std::size_t size) { return std::aligned_alloc(kAlign, size); }  // size: a multiple of kAlign
void aligned_free(void* p) { std::free(p); }
#endif

void* fresh(std::size_t size) {
    void* p = aligned(size);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (size >= kHuge) {
        const auto begin = (reinterpret_cast<std::uintptr_t>(p) + 4095) & ~std::uintptr_t(4095);
        const auto end = (reinterpret_cast<std::uintptr_t>(p) + size) & ~std::uintptr_t(4095);
        if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
#endif
    return p;
}

}  // namespace

void* acquire_buffer(std::size_t bytes) {
    const std::size_t size = size_class(bytes == 0 ? 1 : bytes);
    if (size >= kMinCached) {
        Cache& c = cache();
        std::lock_guard<std::mutex> guard(c.lock);
        auto it = c.free_blocks.find(size);
        if (it != c.free_blocks.end()) {
            void* p = it->second;
            c.free_blocks.erase(it);
            c.bytes -= size;
            return p;
        }
    }
    return fresh(size);
}

void release_buffer(void* p, std::size_t bytes) {
    if (!p) return;
    const std::size_t size = size_class(bytes == 0 ? 1 : bytes);
    if (size >= kMinCached) {
        Cache& c = cache();
        std::lock_guard<std::mutex> guard(c.lock);
        if (c.bytes + size <= c.budget) {
            c.free_blocks.emplace(size, p);
            c.bytes += size;
            return;
        }
    }
    aligned_free(p);
}

std::size_t trim_buffers() {
    Cache& c = cache();
    std::lock_guard<std::mutex> guard(c.lock);
    const std::size_t freed = c.bytes;
    for (auto& kv : c.free_blocks) aligned_free(kv.second);
    c.free_blocks.clear();
    c.bytes = 0;
    return freed;
}

std::size_t cached_bytes() {
    Cache& c = cache();
    std::lock_guard<std::mutex> guard(c.lock);
    return c.bytes;
}

}  // namespace ls

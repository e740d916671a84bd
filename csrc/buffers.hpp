// A small cache of large output buffers.
//
// A fresh page costs a page fault on first touch; on some machines (VMs, sandboxes) that is ~3 µs per
// 4 KiB, twenty times the cost of writing it. Kernels whose outputs are as large as their inputs
// (the scans) would spend most of their time there. Freed buffers of at least kMinCached bytes are
// therefore kept (up to a byte budget, LAYERSCOPE_NATIVE_CACHE_MB, default 256) and handed out again
// for requests of the same size class. Large fresh buffers are also advised to use huge pages.
#pragma once

#include <cstddef>

namespace ls {

void* acquire_buffer(std::size_t bytes);        // 64-byte aligned; never null (throws std::bad_alloc)
void release_buffer(void* p, std::size_t bytes);  // bytes: as passed to acquire_buffer
std::size_t trim_buffers();                     // frees every cached buffer; returns the bytes freed
std::size_t cached_bytes();

}  // namespace ls

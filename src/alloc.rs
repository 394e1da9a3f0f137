//! Giving freed memory back to the kernel.
//!
//! The `switchboard` binary uses jemalloc when built with the `jemalloc`
//! feature (the default) and glibc's malloc otherwise. Either way a worker's
//! housekeeping calls [`release_free_memory`] so that a node that once held
//! many connections does not keep their pages for months.

/// Returns free heap pages to the kernel: jemalloc purges the unused dirty
/// pages of every arena; glibc trims its heaps (`malloc_trim`).
pub fn release_free_memory() {
    #[cfg(feature = "jemalloc")]
    {
        // "arena.<MALLCTL_ARENAS_ALL>.purge" (4096 = MALLCTL_ARENAS_ALL).
        let name = b"arena.4096.purge\0";
        // SAFETY: a NUL-terminated control name; purge reads and writes no value.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the calling thread's cached free blocks to the shared heap
/// (jemalloc's `thread.tcache.flush`). A thread cache keeps up to a few
/// hundred freed blocks per size class for reuse; after a burst of work
/// (say a thousand connections set up) a thread that then goes quiet would
/// hold them, unused, until its next burst. No-op with glibc malloc, whose
/// per-thread cache is a few blocks per size.
pub fn flush_thread_cache() {
    #[cfg(feature = "jemalloc")]
    // SAFETY: a NUL-terminated control name; the flush reads and writes no value.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// Which allocator the running binary uses (for `/debug/memory`).
pub fn allocator_name() -> &'static str {
    if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else {
        "glibc malloc"
    }
}

/// jemalloc's `opt.dirty_decay_ms` (how long unused pages are kept before
/// they go back to the kernel); `None` without jemalloc.
pub fn jemalloc_dirty_decay_ms() -> Option<i64> {
    #[cfg(feature = "jemalloc")]
    {
        let mut v: isize = 0;
        let mut len = std::mem::size_of::<isize>();
        // SAFETY: `opt.dirty_decay_ms` is an ssize_t; pointer and size match,
        // and nothing is written.
        let r = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"opt.dirty_decay_ms".as_ptr(),
                (&mut v as *mut isize).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        (r == 0).then_some(v as i64)
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

/// jemalloc's heap totals in bytes (`stats.*`), refreshed on each call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HeapStats {
    /// Bytes in live allocations, as the program asked for them (after size-class rounding).
    pub allocated: u64,
    /// Bytes in pages that hold live allocations (allocated plus slab slack).
    pub active: u64,
    /// Bytes of allocator metadata.
    pub metadata: u64,
    /// Bytes of resident pages the allocator has mapped (active, metadata and
    /// dirty pages not yet given back).
    pub resident: u64,
    /// Bytes mapped but not resident (kept for reuse; costs address space only).
    pub retained: u64,
}

/// The heap totals, or `None` without jemalloc (glibc's malloc has no
/// equivalent that is cheap and thread-safe to read).
pub fn jemalloc_heap_stats() -> Option<HeapStats> {
    #[cfg(feature = "jemalloc")]
    {
        // Writing "epoch" makes jemalloc refresh its cached statistics.
        let mut epoch: u64 = 1;
        // SAFETY: "epoch" takes and returns a uint64_t; pointers and sizes match.
        unsafe {
            let mut len = std::mem::size_of::<u64>();
            tikv_jemalloc_sys::mallctl(
                c"epoch".as_ptr(),
                (&mut epoch as *mut u64).cast(),
                &mut len,
                (&mut epoch as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        let read = |name: &std::ffi::CStr| -> Option<u64> {
            let mut v: usize = 0;
            let mut len = std::mem::size_of::<usize>();
            // SAFETY: the stats.* totals are size_t; pointer and size match, nothing is written.
            let r = unsafe {
                tikv_jemalloc_sys::mallctl(
                    name.as_ptr(),
                    (&mut v as *mut usize).cast(),
                    &mut len,
                    std::ptr::null_mut(),
                    0,
                )
            };
            (r == 0).then_some(v as u64)
        };
        Some(HeapStats {
            allocated: read(c"stats.allocated")?,
            active: read(c"stats.active")?,
            metadata: read(c"stats.metadata")?,
            resident: read(c"stats.resident")?,
            retained: read(c"stats.retained")?,
        })
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_allocator_and_releases_memory() {
        let name = super::allocator_name();
        assert!(name == "jemalloc" || name == "glibc malloc");
        // Purging or trimming with nothing to give back is harmless.
        super::flush_thread_cache();
        super::release_free_memory();
        #[cfg(feature = "jemalloc")]
        assert!(
            super::jemalloc_dirty_decay_ms().is_some(),
            "jemalloc answers its controls"
        );
        #[cfg(not(feature = "jemalloc"))]
        assert_eq!(super::jemalloc_dirty_decay_ms(), None);
        #[cfg(not(feature = "jemalloc"))]
        assert_eq!(super::jemalloc_heap_stats(), None);
    }
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_allocator_and_releases_memory() {
        let name = super::allocator_name();
        assert!(name == "jemalloc" || name == "glibc malloc");
        // Purging or trimming with nothing to give back is harmless.
        super::release_free_memory();
        #[cfg(feature = "jemalloc")]
        assert!(
            super::jemalloc_dirty_decay_ms().is_some(),
            "jemalloc answers its controls"
        );
        #[cfg(not(feature = "jemalloc"))]
        assert_eq!(super::jemalloc_dirty_decay_ms(), None);
    }
}

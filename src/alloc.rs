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

/// Which allocator the running binary uses, for `/info` and `/debug/memory`.
pub fn allocator_name() -> &'static str {
    if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else {
        "glibc malloc"
    }
}

/// A `size_t`-sized jemalloc control value by name (e.g. `opt.dirty_decay_ms`),
/// read after refreshing the statistics epoch; `None` without jemalloc or for
/// an unknown name.
pub fn jemalloc_stat(name: &str) -> Option<u64> {
    #[cfg(feature = "jemalloc")]
    {
        use std::ffi::CString;
        let mut epoch: u64 = 1;
        let mut len = std::mem::size_of::<u64>();
        // SAFETY: "epoch" takes and returns a u64; the pointers and sizes match.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"epoch".as_ptr(),
                (&mut epoch as *mut u64).cast(),
                &mut len,
                (&mut epoch as *mut u64).cast(),
                len,
            );
        }
        let c = CString::new(name).ok()?;
        let mut v: usize = 0;
        let mut len = std::mem::size_of::<usize>();
        // SAFETY: the `stats.*` size statistics are size_t values; pointer and size match.
        let r = unsafe {
            tikv_jemalloc_sys::mallctl(
                c.as_ptr(),
                (&mut v as *mut usize).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if r == 0 && len == std::mem::size_of::<usize>() {
            return Some(v as u64);
        }
        None
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        let _ = name;
        None
    }
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
        assert_eq!(
            super::jemalloc_stat("opt.dirty_decay_ms").map(|_| ()),
            Some(()),
            "jemalloc answers its controls"
        );
        #[cfg(not(feature = "jemalloc"))]
        assert_eq!(super::jemalloc_stat("opt.dirty_decay_ms"), None);
    }
}

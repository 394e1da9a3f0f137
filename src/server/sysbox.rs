//! A box allocated with the C library's `malloc`, whatever the global allocator.
//!
//! jemalloc (the `jemalloc` feature) serves an allocation from size classes,
//! four per doubling: an object of 1,120 bytes (a TLS connection's state,
//! mostly rustls' `UnbufferedServerConnection`) takes a 1,280-byte class,
//! 160 bytes lost per idle TLS connection. glibc's malloc gives it 1,136. The
//! TLS state of each connection is therefore kept in a [`SysBox`]; with the
//! default allocator (glibc) this is the same as a `Box`.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// An owned `T` in memory from `libc::malloc`. `T` must not need more than
/// 16-byte alignment (checked when the box is made).
pub struct SysBox<T> {
    ptr: NonNull<T>,
}

// SAFETY: a SysBox owns its T exclusively, like Box<T>; malloc'd memory may be
// freed on any thread.
unsafe impl<T: Send> Send for SysBox<T> {}

impl<T> SysBox<T> {
    /// Moves `value` into a fresh `malloc` allocation. Aborts on allocation
    /// failure, as `Box::new` does.
    pub fn new(value: T) -> SysBox<T> {
        const { assert!(std::mem::align_of::<T>() <= 16 && std::mem::size_of::<T>() > 0) };
        // SAFETY: malloc with a non-zero size; the result is checked for null.
        let raw = unsafe { libc::malloc(std::mem::size_of::<T>()) } as *mut T;
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>());
        };
        // SAFETY: `ptr` is valid for writes of one T and suitably aligned
        // (malloc aligns to 16 bytes on 64-bit Linux, checked above).
        unsafe { ptr.as_ptr().write(value) };
        SysBox { ptr }
    }
}

impl<T> Deref for SysBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `ptr` holds an initialised T for the box's whole life.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for SysBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for SysBox<T> {
    fn drop(&mut self) {
        // SAFETY: the T is initialised and dropped exactly once here; the
        // memory came from libc::malloc and is freed exactly once.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            libc::free(self.ptr.as_ptr().cast());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SysBox;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>, [u8; 1120]);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn holds_drops_once_and_moves_between_threads() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut b = SysBox::new(Counted(drops.clone(), [7; 1120]));
        b.1[0] = 9;
        assert_eq!((b.1[0], b.1[1119]), (9, 7));
        let b = std::thread::spawn(move || {
            assert_eq!(b.1[1], 7);
            b
        })
        .join()
        .expect("thread");
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}

//! Socket reads and writes as direct system calls.
//!
//! `std`'s `TcpStream` reads and writes go through glibc's `recv`/`send`,
//! which are POSIX thread-cancellation points: every call switches
//! asynchronous cancellation on and off around the system call, about 1% of
//! the relay's CPU time. Nothing here uses thread cancellation, so the
//! workers call `recvfrom`/`sendto` through `syscall(2)` instead. Semantics
//! are those of `recv(fd, buf, len, 0)` and `send(fd, buf, len, MSG_NOSIGNAL)`
//! (the flag `std` uses too: a closed peer is an `EPIPE` error, not a signal).

use std::io;
use std::os::fd::RawFd;

/// `recv(fd, buf, buf.len(), 0)`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which is writable for the
    // whole call; a null source address with length 0 is allowed by recvfrom.
    let r = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `recv` of at most `max` bytes appended to `buf` (its spare capacity,
/// reserved first): the bytes go straight to where they are kept.
pub fn recv_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = max.min(spare.len());
    // SAFETY: the pointer and length describe the first `len` bytes of `buf`'s
    // spare capacity, writable memory owned by `buf` for the whole call; recv
    // writes at most `len` bytes there.
    let r = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            spare.as_mut_ptr(),
            len,
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (r as usize).min(len);
    // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `send(fd, buf, buf.len(), MSG_NOSIGNAL)`.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, readable for the whole
    // call; a null destination with length 0 is what send(2) passes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Most pieces [`send_parts`] sends in one call.
pub const MAX_PARTS: usize = 4;

/// `sendmsg(fd, {parts, with the first `skip` bytes left out}, MSG_NOSIGNAL)`:
/// one system call for bytes that lie in separate buffers (at most
/// [`MAX_PARTS`]; more are left for a later call).
pub fn send_parts(fd: RawFd, parts: &[&[u8]], mut skip: usize) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_PARTS];
    let mut n = 0;
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        if n == MAX_PARTS {
            break;
        }
        let rest = &p[skip..];
        skip = 0;
        iov[n] = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        n += 1;
    }
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    // SAFETY: the first `n` iovecs describe parts of `parts`, readable for the
    // whole call (sendmsg only reads through them); `msg` and `iov` outlive it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd,
            &msg as *const libc::msghdr,
            libc::MSG_NOSIGNAL,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn send_and_recv_over_a_socket_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        b.set_nonblocking(true).expect("nonblocking");
        assert_eq!(send(a.as_raw_fd(), b"hello").expect("send"), 5);
        let mut buf = [0u8; 16];
        assert_eq!(recv(b.as_raw_fd(), &mut buf).expect("recv"), 5);
        assert_eq!(&buf[..5], b"hello");
        let e = recv(b.as_raw_fd(), &mut buf).expect_err("nothing left");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(recv(b.as_raw_fd(), &mut buf).expect("eof"), 0);
        let e = send(b.as_raw_fd(), b"x").expect_err("peer closed");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "EPIPE, no SIGPIPE");
    }

    #[test]
    fn send_parts_sends_the_pieces_in_order_after_skipping() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        b.set_nonblocking(true).expect("nonblocking");
        let parts: [&[u8]; 6] = [b"ab", b"", b"cde", b"f", b"g", b"h"];
        let all = b"abcdefgh";
        for skip in 0..=all.len() {
            let n = send_parts(a.as_raw_fd(), &parts, skip).expect("sendmsg");
            // Four pieces at most (empty ones do not count): with "ab" not
            // yet sent in full, "h" waits.
            let want = if skip < 2 {
                &all[skip..7]
            } else {
                &all[skip..]
            };
            assert_eq!(n, want.len(), "skip {skip}");
            let mut buf = [0u8; 16];
            let got = if n == 0 {
                0
            } else {
                recv(b.as_raw_fd(), &mut buf).expect("recv")
            };
            assert_eq!(&buf[..got], want, "skip {skip}");
        }
    }
}

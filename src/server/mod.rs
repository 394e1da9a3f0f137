//! The thread-per-core event loop.

//! A process's memory as the idle probe reads it: resident set size from /proc, and the bytes
//! glibc's malloc has handed out and not taken back (live heap, without malloc's free lists
//! and fragmentation).

/// VmRSS of `pid` in KiB (the benchmarks' reading), 0 where unavailable.
pub use roomcast_client::bench::rss_kib;

/// Bytes allocated through malloc and still in use, over all arenas: chunks in use on the
/// heaps (`uordblks`) plus blocks malloc mapped on their own (`hblkhd`).
pub fn heap_bytes() -> u64 {
    // SAFETY: mallinfo2 only reads malloc's statistics; it takes no arguments and has no
    // preconditions (glibc ≥ 2.33, which this Debian has).
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// Returns malloc's free memory at the top of each heap and whole free pages inside them to
/// the kernel, so that RSS then counts little of what was freed (e.g. handshake buffers).
pub fn trim() {
    // SAFETY: malloc_trim only walks malloc's own free lists; 0 = keep no extra padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

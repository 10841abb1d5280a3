//! CLOCK_MONOTONIC in nanoseconds. `std::time::Instant` hides its value, and the benches compare a
//! publish time taken in one process with receive times taken in others: on one box CLOCK_MONOTONIC is
//! the same clock for every process.

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a valid and exclusively borrowed local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

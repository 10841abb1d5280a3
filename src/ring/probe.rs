//! Start-up probe: every kernel feature the gateway uses, checked before any worker starts; and
//! `check_min_wait`, the one optional feature (`wake_batch_us`), checked only when configured.
//!
//! A missing feature fails start-up with the feature, the kernel version that has it and the
//! setting to change, instead of a bare errno from deep inside a worker.

use std::fmt;
use std::io;

use io_uring::{opcode, IoUring, Probe};

/// A feature the gateway needs and this kernel (or its settings) does not give.
#[derive(Debug)]
pub struct Missing {
    pub feature: &'static str,
    pub since: &'static str,
    pub hint: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring feature missing: {} (Linux {}+, this kernel is {}). {}",
            self.feature,
            self.since,
            kernel_release(),
            self.hint
        )
    }
}

impl std::error::Error for Missing {}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

/// `(major, minor)` of the running kernel, if it can be read.
pub fn kernel_version() -> Option<(u32, u32)> {
    release_version(&kernel_release())
}

/// `(major, minor)` of a release string such as `6.18.44-fc-v669`.
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn setup_hint(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "This kernel was built without io_uring (CONFIG_IO_URING).".into(),
        Some(libc::EPERM) => {
            let disabled =
                std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_default();
            format!(
                "io_uring is disabled for this process (kernel.io_uring_disabled = {}); run \
                 'sysctl -w kernel.io_uring_disabled=0' or add the user to kernel.io_uring_group. \
                 Container runtimes may also block io_uring in their seccomp profile.",
                disabled.trim()
            )
        }
        Some(libc::ENOMEM) => "Not enough locked memory for the ring: raise RLIMIT_MEMLOCK \
             (LimitMEMLOCK= in the systemd unit, memlock in limits.conf), see kernel-tuning/."
            .into(),
        Some(libc::EINVAL) => {
            "The kernel rejected the ring flags SINGLE_ISSUER|DEFER_TASKRUN.".into()
        }
        _ => format!("io_uring_setup failed: {e}"),
    }
}

/// One feature the gateway uses, and whether this kernel (with its settings) gives it.
#[derive(Debug)]
pub struct Feature {
    pub feature: &'static str,
    pub since: &'static str,
    /// `None` when present; otherwise what failed and what to do about it.
    pub missing: Option<String>,
}

impl Feature {
    fn new(feature: &'static str, since: &'static str, missing: Option<String>) -> Self {
        Self {
            feature,
            since,
            missing,
        }
    }
}

/// A small ring with the flags the gateway's rings use, to ask the kernel about them.
fn probe_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
}

/// Checks every feature and returns each outcome, in the order `check` reports them. When the ring
/// itself cannot be set up (or probed) nothing else can be checked, and the list ends there.
pub fn features() -> Vec<Feature> {
    let mut out = Vec::new();
    let ring = match probe_ring() {
        Ok(ring) => ring,
        Err(e) => {
            out.push(Feature::new(
                "io_uring with SINGLE_ISSUER | DEFER_TASKRUN",
                "6.1",
                Some(setup_hint(&e)),
            ));
            return out;
        }
    };
    out.push(Feature::new(
        "io_uring with SINGLE_ISSUER | DEFER_TASKRUN",
        "6.1",
        None,
    ));
    let mut probe = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        out.push(Feature::new(
            "IORING_REGISTER_PROBE",
            "5.6",
            Some(format!("register_probe failed: {e}")),
        ));
        return out;
    }
    let ops: [(u8, &'static str, &'static str); 8] = [
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT", "5.5"),
        (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD", "5.1"),
        (opcode::Recv::CODE, "IORING_OP_RECV", "5.6"),
        (opcode::Send::CODE, "IORING_OP_SEND", "5.6"),
        (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN", "5.11"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL", "5.5"),
        (opcode::Close::CODE, "IORING_OP_CLOSE", "5.6"),
        (opcode::Timeout::CODE, "IORING_OP_TIMEOUT", "5.4"),
    ];
    for (code, feature, since) in ops {
        let missing = (!probe.is_supported(code)).then(|| "Upgrade the kernel.".to_string());
        out.push(Feature::new(feature, since, missing));
    }
    // Flags and register calls the opcode probe cannot see: multishot accept into auto-allocated
    // direct descriptors, ring-provided buffers, cancel-by-fd. All arrived in 5.19.
    let old = kernel_version().is_some_and(|v| v < (5, 19));
    out.push(Feature::new(
        "multishot accept with direct descriptors, provided-buffer rings",
        "5.19",
        old.then(|| "Upgrade the kernel (6.1 or later is recommended).".to_string()),
    ));
    out.push(Feature::new(
        "sparse fixed-file table (IORING_REGISTER_FILES2 sparse)",
        "5.19",
        ring.submitter()
            .register_files_sparse(1)
            .err()
            .map(|e| format!("register_files_sparse failed: {e}")),
    ));
    let bufs = super::bufring::BufRing::new(&ring.submitter(), 2, 256, 0);
    out.push(Feature::new(
        "provided-buffer ring (IORING_REGISTER_PBUF_RING)",
        "5.19",
        bufs.as_ref()
            .err()
            .map(|e| format!("register_buf_ring failed: {e}")),
    ));
    // The ring goes first: the buffer memory must outlive its registration.
    drop(ring);
    drop(bufs);
    out
}

/// The batched sleep of `wake_batch_us`: io_uring's `min_wait` (`IORING_FEAT_MIN_TIMEOUT`, 6.12).
/// Optional: not in `features`, because the gateway needs it only when a window is configured.
pub fn min_wait() -> Feature {
    let missing = match probe_ring() {
        Err(e) => Some(setup_hint(&e)),
        Ok(ring) if ring.params().is_feature_min_timeout() => None,
        Ok(_) => Some("Upgrade the kernel or set wake_batch_us = 0.".to_string()),
    };
    Feature::new(
        "min_wait (IORING_FEAT_MIN_TIMEOUT), for wake_batch_us",
        "6.12",
        missing,
    )
}

/// `min_wait` as a start-up check: the gateway calls it only when `wake_batch_us` is set.
pub fn check_min_wait() -> Result<(), Missing> {
    let f = min_wait();
    f.missing.map_or(Ok(()), |hint| {
        Err(Missing {
            feature: f.feature,
            since: f.since,
            hint,
        })
    })
}

/// Checks every feature; `Ok` means workers can start, `Err` names the first one missing.
pub fn check() -> Result<(), Missing> {
    features()
        .into_iter()
        .find_map(|f| {
            f.missing.map(|hint| Missing {
                feature: f.feature,
                since: f.since,
                hint,
            })
        })
        .map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_version_parses() {
        let (major, _) = kernel_version().expect("kernel version readable");
        assert!(major >= 5);
    }

    #[test]
    fn release_version_reads_major_and_minor() {
        assert_eq!(release_version("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(release_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(release_version("6"), None);
        assert_eq!(release_version("unknown"), None);
    }

    #[test]
    fn min_wait_is_reported_as_this_kernel_has_it() {
        let has = kernel_version().is_some_and(|v| v >= (6, 12));
        assert_eq!(check_min_wait().is_ok(), has, "kernel {}", kernel_release());
    }

    #[test]
    fn this_kernel_has_every_feature() {
        // The project's machines run 6.x with io_uring enabled; a failure here names what is missing.
        if let Err(m) = check() {
            panic!("{m}");
        }
    }

    #[test]
    fn features_lists_each_check_once() {
        let all = features();
        // Setup, 8 opcodes, the 5.19 version gate, the sparse table, the buffer ring.
        assert_eq!(all.len(), 12, "{all:?}");
        let missing: Vec<_> = all.iter().filter(|f| f.missing.is_some()).collect();
        assert!(missing.is_empty(), "{missing:?}");
    }
}

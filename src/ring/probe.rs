//! Start-up probe: every kernel feature the gateway uses, checked before any worker starts.
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
    let release = kernel_release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
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

/// Checks every feature; `Ok` means workers can start.
pub fn check() -> Result<(), Missing> {
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .map_err(|e| Missing {
            feature: "io_uring with SINGLE_ISSUER | DEFER_TASKRUN",
            since: "6.1",
            hint: setup_hint(&e),
        })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| Missing {
            feature: "IORING_REGISTER_PROBE",
            since: "5.6",
            hint: format!("register_probe failed: {e}"),
        })?;
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
        if !probe.is_supported(code) {
            return Err(Missing {
                feature,
                since,
                hint: "Upgrade the kernel.".into(),
            });
        }
    }
    // Flags and register calls the opcode probe cannot see: multishot accept into auto-allocated
    // direct descriptors, ring-provided buffers, cancel-by-fd. All arrived in 5.19.
    if kernel_version().is_some_and(|v| v < (5, 19)) {
        return Err(Missing {
            feature: "multishot accept with direct descriptors, provided-buffer rings",
            since: "5.19",
            hint: "Upgrade the kernel (6.1 or later is recommended).".into(),
        });
    }
    ring.submitter()
        .register_files_sparse(1)
        .map_err(|e| Missing {
            feature: "sparse fixed-file table (IORING_REGISTER_FILES2 sparse)",
            since: "5.19",
            hint: format!("register_files_sparse failed: {e}"),
        })?;
    let bufs = super::bufring::BufRing::new(&ring.submitter(), 2, 256, 0).map_err(|e| Missing {
        feature: "provided-buffer ring (IORING_REGISTER_PBUF_RING)",
        since: "5.19",
        hint: format!("register_buf_ring failed: {e}"),
    })?;
    // The ring goes first: the buffer memory must outlive its registration.
    drop(ring);
    drop(bufs);
    Ok(())
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
    fn this_kernel_has_every_feature() {
        // The project's machines run 6.x with io_uring enabled; a failure here names what is missing.
        if let Err(m) = check() {
            panic!("{m}");
        }
    }
}

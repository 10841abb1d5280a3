//! What this box is: every value `doctor` weighs, read once into one plain struct.
//!
//! `Facts::read(root)` reads `/proc` and `/sys` below `root`, so tests point it at a fixture tree;
//! `Facts::live()` reads `/` and adds what only syscalls can tell (the io_uring probe, the page
//! size). A file that is absent or unparsable leaves its field `None` and is listed in
//! `unreadable`, so a missing value is reported, never guessed.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::parse::{self, CgroupMemory, ParseError, Rlimit};
use crate::ring::probe;

/// Connection tracking, present only when `nf_conntrack` is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Conntrack {
    /// `net.netfilter.nf_conntrack_max`: entries the table may hold.
    pub max: u64,
    /// `net.netfilter.nf_conntrack_count`: entries now. 0 on a box with traffic means no ruleset
    /// hooks conntrack in, so it tracks nothing.
    pub count: u64,
}

/// The memory limit of the cgroup this process runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupLimit {
    /// The limit file read (below the root).
    pub file: String,
    /// `None` = no limit.
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
}

/// One io_uring feature from the start-up probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub feature: &'static str,
    /// First Linux version with it.
    pub since: &'static str,
    /// `None` when present; otherwise the probe's hint.
    pub missing: Option<String>,
    /// Needed only by a setting that is off by default (`wake_batch_us`): when missing, a note,
    /// not a limit on connections.
    pub optional: bool,
}

/// Every value read. `None` = could not be read (see `unreadable`) or, for `conntrack` and
/// `cgroup_memory`, not present on this box.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub kernel_release: Option<String>,
    /// `RLIMIT_NOFILE` of this process (`None` inside = unlimited).
    pub nofile: Option<Rlimit>,
    /// `RLIMIT_MEMLOCK` in bytes (`None` inside = unlimited).
    pub memlock: Option<Rlimit>,
    pub nr_open: Option<u64>,
    pub file_max: Option<u64>,
    /// First field of `fs.file-nr`: file objects allocated system-wide now.
    pub files_allocated: Option<u64>,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    pub tcp_syncookies: Option<u64>,
    pub ip_local_port_range: Option<[u64; 2]>,
    /// `net.ipv4.tcp_mem`: min, pressure, max, in pages.
    pub tcp_mem_pages: Option<[u64; 3]>,
    /// `net.ipv4.tcp_rmem`: min, default, max bytes per socket.
    pub tcp_rmem_bytes: Option<[u64; 3]>,
    /// `net.ipv4.tcp_wmem`: min, default, max bytes per socket.
    pub tcp_wmem_bytes: Option<[u64; 3]>,
    pub tcp_tw_reuse: Option<u64>,
    pub conntrack: Option<Conntrack>,
    pub io_uring_disabled: Option<u64>,
    pub io_uring_group: Option<i64>,
    pub cpus_online: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub cgroup_memory: Option<CgroupLimit>,
    /// Effective capability mask of this process.
    pub cap_eff: Option<u64>,
    /// The unit of `tcp_mem`.
    pub page_bytes: u64,
    /// `None` when not probed (fixtures).
    pub io_uring_features: Option<Vec<Feature>>,
    /// Files that should exist and could not be read or parsed, with the reason.
    pub unreadable: Vec<String>,
}

/// Capability bits (`linux/capability.h`).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;

impl Facts {
    /// Whether this process has `CAP_SYS_ADMIN`, which `fs.file-max` does not apply to.
    pub fn cap_sys_admin(&self) -> Option<bool> {
        self.cap_eff.map(|m| m >> CAP_SYS_ADMIN & 1 == 1)
    }

    /// Whether this process has `CAP_SYS_RESOURCE`, needed to raise a hard rlimit.
    pub fn cap_sys_resource(&self) -> Option<bool> {
        self.cap_eff.map(|m| m >> CAP_SYS_RESOURCE & 1 == 1)
    }

    /// `(major, minor)` of `kernel_release`.
    pub fn kernel_version(&self) -> Option<(u32, u32)> {
        probe::release_version(self.kernel_release.as_deref()?)
    }

    /// This machine: `/proc` and `/sys`, the page size and the io_uring probe.
    pub fn live() -> Self {
        let mut facts = Self::read(Path::new("/"));
        // SAFETY: sysconf has no memory preconditions; a failure returns -1, handled below.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = u64::try_from(page) {
            facts.page_bytes = page;
        }
        let required = probe::features().into_iter().map(|f| (f, false));
        let optional = std::iter::once((probe::min_wait(), true));
        facts.io_uring_features = Some(
            required
                .chain(optional)
                .map(|(f, optional)| Feature {
                    feature: f.feature,
                    since: f.since,
                    missing: f.missing,
                    optional,
                })
                .collect(),
        );
        facts
    }

    /// Reads every file below `root` (a real `/` or a fixture tree). The page size defaults to
    /// 4096 and the io_uring probe is left out: neither is a file.
    pub fn read(root: &Path) -> Self {
        let mut r = Reader {
            root: root.to_path_buf(),
            unreadable: Vec::new(),
        };
        let limits = r.text("proc/self/limits", true);
        let mut limit = |name| {
            let text = limits.as_deref()?;
            r.parsed("proc/self/limits", parse::proc_limit(text, name))
        };
        let nofile = limit("Max open files");
        let memlock = limit("Max locked memory");
        let meminfo = r.get("proc/meminfo", parse::meminfo);
        let conntrack = r
            .optional("proc/sys/net/netfilter/nf_conntrack_max", parse::number)
            .map(|max| Conntrack {
                max,
                count: r
                    .get("proc/sys/net/netfilter/nf_conntrack_count", parse::number)
                    .unwrap_or(0),
            });
        let cgroup_memory = r.cgroup_memory();
        let sys = |r: &mut Reader, key: &str| r.get(&format!("proc/sys/{key}"), parse::number);
        Self {
            kernel_release: r
                .text("proc/sys/kernel/osrelease", true)
                .map(|s| s.trim().to_string()),
            nofile,
            memlock,
            nr_open: sys(&mut r, "fs/nr_open"),
            file_max: sys(&mut r, "fs/file-max"),
            files_allocated: r.get("proc/sys/fs/file-nr", parse::files_allocated),
            somaxconn: sys(&mut r, "net/core/somaxconn"),
            tcp_max_syn_backlog: sys(&mut r, "net/ipv4/tcp_max_syn_backlog"),
            tcp_syncookies: sys(&mut r, "net/ipv4/tcp_syncookies"),
            ip_local_port_range: r
                .get("proc/sys/net/ipv4/ip_local_port_range", parse::numbers::<2>),
            tcp_mem_pages: r.get("proc/sys/net/ipv4/tcp_mem", parse::numbers::<3>),
            tcp_rmem_bytes: r.get("proc/sys/net/ipv4/tcp_rmem", parse::numbers::<3>),
            tcp_wmem_bytes: r.get("proc/sys/net/ipv4/tcp_wmem", parse::numbers::<3>),
            tcp_tw_reuse: sys(&mut r, "net/ipv4/tcp_tw_reuse"),
            conntrack,
            // Absent before 6.6: io_uring is then enabled for everyone.
            io_uring_disabled: r.optional("proc/sys/kernel/io_uring_disabled", parse::number),
            io_uring_group: r.optional("proc/sys/kernel/io_uring_group", parse::signed),
            cpus_online: r.get("sys/devices/system/cpu/online", parse::cpu_count),
            mem_total_bytes: meminfo.map(|m| m.total_bytes),
            mem_available_bytes: meminfo.map(|m| m.available_bytes),
            cgroup_memory,
            cap_eff: r.get("proc/self/status", parse::cap_eff),
            page_bytes: 4096,
            io_uring_features: None,
            unreadable: r.unreadable,
        }
    }
}

/// Reads files below `root`, noting each failure once.
struct Reader {
    root: PathBuf,
    unreadable: Vec<String>,
}

impl Reader {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The file's text; a missing file is noted only when `required`.
    fn text(&mut self, rel: &str, required: bool) -> Option<String> {
        match std::fs::read_to_string(self.path(rel)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => None,
            Err(e) => {
                self.unreadable.push(format!("/{rel}: {e}"));
                None
            }
        }
    }

    fn parsed<T>(&mut self, rel: &str, value: Result<T, ParseError>) -> Option<T> {
        value
            .map_err(|e| self.unreadable.push(format!("/{rel}: {e}")))
            .ok()
    }

    fn get<T>(&mut self, rel: &str, parse: fn(&str) -> Result<T, ParseError>) -> Option<T> {
        let text = self.text(rel, true)?;
        self.parsed(rel, parse(&text))
    }

    /// Like `get`, but a missing file is normal (a module not loaded, an older kernel).
    fn optional<T>(&mut self, rel: &str, parse: fn(&str) -> Result<T, ParseError>) -> Option<T> {
        let text = self.text(rel, false)?;
        self.parsed(rel, parse(&text))
    }

    fn cgroup_memory(&mut self) -> Option<CgroupLimit> {
        let (dir, limit, usage) =
            match parse::cgroup_memory(&self.text("proc/self/cgroup", false)?)? {
                CgroupMemory::V1(path) => (
                    format!("sys/fs/cgroup/memory{path}"),
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                ),
                CgroupMemory::V2(path) => (
                    format!("sys/fs/cgroup{path}"),
                    "memory.max",
                    "memory.current",
                ),
            };
        let dir = dir.trim_end_matches('/');
        let file = format!("{dir}/{limit}");
        // The root cgroup has no limit file: no limit.
        let limit_bytes = self.optional(&file, parse::cgroup_limit)?;
        Some(CgroupLimit {
            file: format!("/{file}"),
            limit_bytes,
            usage_bytes: self.optional(&format!("{dir}/{usage}"), parse::number),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A box like the project's machines, with a few values changed so each is traceable.
    fn fixture(root: &Path) {
        write(
            root,
            "proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max open files            1024                 524288               files     \n\
             Max locked memory         unlimited            unlimited            bytes     \n",
        );
        write(
            root,
            "proc/meminfo",
            "MemTotal:  2048 kB\nMemAvailable:  1024 kB\n",
        );
        write(root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        write(root, "proc/sys/fs/nr_open", "1048576\n");
        write(root, "proc/sys/fs/file-max", "9223372036854775807\n");
        write(
            root,
            "proc/sys/fs/file-nr",
            "1200\t0\t9223372036854775807\n",
        );
        write(root, "proc/sys/net/core/somaxconn", "4096\n");
        write(root, "proc/sys/net/ipv4/tcp_max_syn_backlog", "512\n");
        write(root, "proc/sys/net/ipv4/tcp_syncookies", "1\n");
        write(
            root,
            "proc/sys/net/ipv4/ip_local_port_range",
            "32768\t60999\n",
        );
        write(root, "proc/sys/net/ipv4/tcp_mem", "1\t2\t3\n");
        write(
            root,
            "proc/sys/net/ipv4/tcp_rmem",
            "4096\t131072\t6291456\n",
        );
        write(root, "proc/sys/net/ipv4/tcp_wmem", "4096\t16384\t4194304\n");
        write(root, "proc/sys/net/ipv4/tcp_tw_reuse", "2\n");
        write(root, "proc/sys/kernel/io_uring_disabled", "1\n");
        write(root, "proc/sys/kernel/io_uring_group", "-1\n");
        write(root, "sys/devices/system/cpu/online", "0-7\n");
        write(root, "proc/self/status", "CapEff:\t0000000000000000\n");
        write(
            root,
            "proc/self/cgroup",
            "0::/system.slice/ringgate.service\n",
        );
        write(
            root,
            "sys/fs/cgroup/system.slice/ringgate.service/memory.max",
            "8589934592\n",
        );
        write(
            root,
            "sys/fs/cgroup/system.slice/ringgate.service/memory.current",
            "1048576\n",
        );
    }

    #[test]
    fn reads_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let f = Facts::read(dir.path());
        assert_eq!(f.unreadable, Vec::<String>::new());
        assert_eq!(f.kernel_release.as_deref(), Some("6.1.0-18-amd64"));
        assert_eq!(f.kernel_version(), Some((6, 1)));
        assert_eq!(
            f.nofile,
            Some(Rlimit {
                soft: Some(1024),
                hard: Some(524_288)
            })
        );
        assert_eq!(
            f.memlock,
            Some(Rlimit {
                soft: None,
                hard: None
            })
        );
        assert_eq!(f.nr_open, Some(1_048_576));
        assert_eq!(f.file_max, Some(9_223_372_036_854_775_807));
        assert_eq!(f.files_allocated, Some(1200));
        assert_eq!(f.somaxconn, Some(4096));
        assert_eq!(f.tcp_max_syn_backlog, Some(512));
        assert_eq!(f.tcp_syncookies, Some(1));
        assert_eq!(f.ip_local_port_range, Some([32_768, 60_999]));
        assert_eq!(f.tcp_mem_pages, Some([1, 2, 3]));
        assert_eq!(f.tcp_rmem_bytes, Some([4096, 131_072, 6_291_456]));
        assert_eq!(f.tcp_wmem_bytes, Some([4096, 16_384, 4_194_304]));
        assert_eq!(f.tcp_tw_reuse, Some(2));
        assert_eq!(f.conntrack, None, "module not loaded: no file, no note");
        assert_eq!(f.io_uring_disabled, Some(1));
        assert_eq!(f.io_uring_group, Some(-1));
        assert_eq!(f.cpus_online, Some(8));
        assert_eq!(f.mem_total_bytes, Some(2048 * 1024));
        assert_eq!(f.mem_available_bytes, Some(1024 * 1024));
        assert_eq!(
            f.cgroup_memory,
            Some(CgroupLimit {
                file: "/sys/fs/cgroup/system.slice/ringgate.service/memory.max".into(),
                limit_bytes: Some(8 << 30),
                usage_bytes: Some(1 << 20),
            })
        );
        assert_eq!(f.cap_sys_admin(), Some(false));
        assert_eq!(f.cap_sys_resource(), Some(false));
        assert_eq!(f.io_uring_features, None);
    }

    #[test]
    fn conntrack_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        write(
            dir.path(),
            "proc/sys/net/netfilter/nf_conntrack_max",
            "262144\n",
        );
        write(
            dir.path(),
            "proc/sys/net/netfilter/nf_conntrack_count",
            "17\n",
        );
        let f = Facts::read(dir.path());
        assert_eq!(
            f.conntrack,
            Some(Conntrack {
                max: 262_144,
                count: 17
            })
        );
    }

    #[test]
    fn missing_and_garbled_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        std::fs::remove_file(dir.path().join("proc/sys/fs/nr_open")).unwrap();
        write(dir.path(), "proc/sys/net/core/somaxconn", "many\n");
        let f = Facts::read(dir.path());
        assert_eq!(f.nr_open, None);
        assert_eq!(f.somaxconn, None);
        assert_eq!(f.unreadable.len(), 2, "{:?}", f.unreadable);
        assert!(
            f.unreadable[0].starts_with("/proc/sys/fs/nr_open: "),
            "{:?}",
            f.unreadable
        );
        assert_eq!(
            f.unreadable[1],
            "/proc/sys/net/core/somaxconn: expected an unsigned integer, found \"many\""
        );
    }

    #[test]
    fn root_cgroup_has_no_limit() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        write(dir.path(), "proc/self/cgroup", "4:memory:/\n0::/\n");
        let f = Facts::read(dir.path());
        assert_eq!(f.cgroup_memory, None);
        assert!(f.unreadable.is_empty(), "{:?}", f.unreadable);
    }
}

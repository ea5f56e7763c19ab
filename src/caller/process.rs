//! From a socket inode to the process that holds it, through `/proc`.
//!
//! Contract: [`holder`] scans `/proc/<pid>/fd/*` of the processes owned by `uid` for the link
//! `socket:[inode]` and describes the first holder found: pid, effective gid, supplementary
//! groups and executable (`/proc/<pid>/exe`). Blocking, proportional to the number of
//! descriptors of that uid's processes; run it off the packet path. Without the privilege to
//! read other users' `/proc/<pid>/fd` (`serve` as a normal user) only the caller's own
//! processes can be found; the uid (from the socket) is known anyway.
//!
//! A socket may be shared by several processes (fork after connect); the first found is
//! named, and the policy judges that one.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Effective gid.
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    pub exe: Option<PathBuf>,
}

/// The process of `uid` holding socket `inode`, if one can be seen.
pub fn holder(uid: u32, inode: u64) -> Option<Holder> {
    let target = format!("socket:[{inode}]");
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // /proc/<pid> belongs to the process's effective uid: skip other users' at once.
        if entry.metadata().map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        if holds {
            return Some(describe(pid));
        }
    }
    None
}

/// What `/proc/<pid>` says about a process.
pub fn describe(pid: u32) -> Holder {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    Holder {
        pid,
        // "Gid:" lists real, effective, saved and filesystem gids.
        gid: ids("Gid:").get(1).copied(),
        groups: ids("Groups:"),
        exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_holder_of_our_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let link =
            std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_else(|e| panic!("{e}"));
        let inode: u64 = link
            .to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap_or_else(|e| panic!("{link:?}: {e}"));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let h = holder(uid, inode).unwrap_or_else(|| panic!("not found"));
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.exe, std::env::current_exe().ok());
        // SAFETY: getegid has no preconditions.
        assert_eq!(h.gid, Some(unsafe { libc::getegid() }));
        assert_eq!(holder(uid, u64::MAX), None);
    }
}

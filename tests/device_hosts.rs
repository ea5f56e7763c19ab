//! Privileged: the hosts-file fallback for a bind-mounted file (containers, `ip netns exec`),
//! where `rename` over the file fails with EBUSY. Runs in a private mount namespace entered by
//! one thread, on temporary files; the real /etc/hosts is never touched. Fails (never skips)
//! without root; see `device_support`.

mod device_support;

use std::ffi::CString;
use std::fs;

use device_support::{require_root, TempDir};
use imds_tun::device::{HostsBlock, HostsFile, WriteMode};

fn cstr(s: &std::path::Path) -> CString {
    CString::new(s.as_os_str().as_encoded_bytes()).unwrap()
}

#[test]
fn bind_mounted_hosts_file_is_rewritten_in_place_and_restored_exactly() {
    require_root();
    let tmp = TempDir::new();
    let source = tmp.path.join("hosts.source");
    let target = tmp.path.join("hosts");
    let original = b"127.0.0.1 localhost\n10.0.0.1 keep-me # no final newline";
    fs::write(&source, original).unwrap();
    fs::write(&target, b"the file under the mount").unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare/mount on this thread only, with valid C strings.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare");
                let root = CString::new("/").unwrap();
                let none = CString::new("none").unwrap();
                assert_eq!(
                    libc::mount(
                        none.as_ptr(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null()
                    ),
                    0,
                    "make / private"
                );
                assert_eq!(
                    libc::mount(
                        cstr(&source).as_ptr(),
                        cstr(&target).as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null()
                    ),
                    0,
                    "bind mount: {}",
                    std::io::Error::last_os_error()
                );
            }
            // The premise: replacing a mount point fails with EBUSY.
            let probe = tmp.path.join("probe");
            fs::write(&probe, b"x").unwrap();
            let err = fs::rename(&probe, &target).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EBUSY));

            let hosts = HostsFile::new(&target);
            let mode = hosts.add(&HostsBlock::metadata("imds0", 1)).unwrap();
            assert_eq!(mode, WriteMode::InPlace);
            let during = fs::read(&target).unwrap();
            // In place, the block is appended: the original bytes are never written over.
            assert!(during.starts_with(original));
            let block = &during[original.len()..];
            assert!(
                block.starts_with(b"# BEGIN imds-tun device=imds0 pid=1 ")
                    || block.starts_with(b"\n# BEGIN imds-tun newline-added device=imds0 pid=1 "),
                "{}",
                String::from_utf8_lossy(block)
            );
            assert!(hosts.remove("imds0").unwrap());
            assert_eq!(fs::read(&target).unwrap(), original);
            // No temporary file left next to it.
            assert!(fs::read_dir(&tmp.path)
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
    // Outside the mount namespace the source file (what the mount showed) carries the result.
    assert_eq!(fs::read(&source).unwrap(), original);
    assert_eq!(fs::read(&target).unwrap(), b"the file under the mount");
}

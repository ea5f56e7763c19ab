//! Crash safety of `imds-tun up` (root, in a test host): SIGKILL at many moments — during
//! startup (before, while and after the TUN device, routes, addresses and the hosts block are
//! made) and while serving requests — and after every kill:
//! - the original lines of /etc/hosts (a bind mount here, so `up` appends its block in place)
//!   are intact, byte for byte, at the start of the file;
//! - the next `up` starts, cleaning what the killed one left;
//!
//! At the end `down` restores routes, addresses and /etc/hosts byte-identical, and `up`
//! still works.
//!
//! The kill moments are spread over startup by a fixed sequence of delays (0 to ~120 ms in
//! steps, where a debug build of `up` creates the device, routes and hosts block), so the same
//! moments are tried on every run; `IMDS_TUN_CRASH_KILLS` sets how many (default 24).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::netns::{Shape, TestHost};
use support::up::Up;

fn kill_and_reap(child: &mut std::process::Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

fn down(host: &TestHost) {
    let out = host
        .command(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["down", "--state-dir"])
        .arg(host.dir().join("state"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigkill_at_any_moment_then_up_works_and_down_restores() {
    let kills: usize = std::env::var("IMDS_TUN_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let host = TestHost::new(Shape::Veth);
    let before = host.restorable();
    let original = &before.hosts;
    let bin = env!("CARGO_BIN_EXE_imds-tun");
    let started = Instant::now();
    let mut killed_serving = 0;
    let mut killed_starting = 0;

    for k in 0..kills {
        if k % 4 == 3 {
            // While serving: up is ready, a request is in flight when the kill lands.
            let up = Up::start(&host, ["--threads", "1"]);
            let curl = host
                .command("curl")
                .args([
                    "-s",
                    "-m",
                    "2",
                    "http://169.254.169.254/latest/meta-data/instance-id",
                ])
                .stdout(Stdio::null())
                .spawn();
            std::thread::sleep(Duration::from_millis(5 * (k as u64 % 7)));
            up.signal(libc::SIGKILL);
            let _ = up.wait(Duration::from_secs(10));
            if let Ok(mut c) = curl {
                let _ = c.wait();
            }
            killed_serving += 1;
        } else {
            // During startup: a kill after a delay that walks through the setup steps.
            let mut child = host
                .command(bin)
                .arg("up")
                .arg("--state-dir")
                .arg(host.dir().join("state"))
                .arg("--key-dir")
                .arg(host.dir().join("keys"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(Duration::from_millis((k as u64 * 37) % 130));
            kill_and_reap(&mut child);
            killed_starting += 1;
        }
        let now = std::fs::read_to_string(&host.hosts_file).unwrap_or_default();
        assert!(
            now.starts_with(original.as_str()),
            "kill {k}: the original lines of /etc/hosts were damaged:\n{now}"
        );
        assert!(
            now.matches("# BEGIN imds-tun").count() <= 1,
            "kill {k}: more than one block:\n{now}"
        );
    }

    // After all that, up starts and serves, and a clean stop restores everything.
    let up = Up::start(&host, ["--threads", "1"]);
    let id = host.sh("curl -s -m 5 http://169.254.169.254/latest/meta-data/instance-id");
    assert!(id.starts_with("i-"), "{id}");
    up.signal(libc::SIGKILL);
    let _ = up.wait(Duration::from_secs(10));
    down(&host);
    host.assert_restored(&before, "after the kills and down");
    println!(
        "crash safety: {killed_starting} kills during startup, {killed_serving} while serving, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

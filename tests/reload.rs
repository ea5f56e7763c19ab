//! Hot reload without dropping anything, for `up` (in a test host, through the TUN) and for
//! `serve`: one keep-alive connection stays open across several reloads of the watched
//! configuration file (rename-over as editors do, and in-place writes), sees the old value
//! before each swap and the new one after it, and is never reset; an invalid file keeps the
//! last good configuration serving and the log names the JSON path that is wrong; SIGHUP
//! reloads too.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use support::netns::{Shape, TestHost};
use support::up::Up;

const PATH: &str = "/latest/meta-data/instance-id";

/// The embedded default with AWS's instance id set to `id`.
fn config_with(id: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    v["aws"]["metaData"]["instance-id"] = serde_json::Value::String(id.into());
    v.to_string()
}

/// One keep-alive request on `stream`; panics if the connection fails (a reset included).
fn get(stream: &mut TcpStream) -> String {
    let req = format!("GET {PATH} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("the keep-alive connection failed on write: {e}"));
    let mut reader = BufReader::new(&mut *stream);
    let mut length = None;
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .unwrap_or_else(|e| panic!("the keep-alive connection failed on read: {e}"));
    assert!(status.starts_with("HTTP/1.1 200"), "status: {status:?}");
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("the keep-alive connection failed on read: {e}"));
        assert!(!line.is_empty(), "the connection was closed");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.unwrap_or_else(|| panic!("no Content-Length"))];
    reader
        .read_exact(&mut body)
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8(body).unwrap_or_else(|e| panic!("{e}"))
}

/// Asks on `stream` until the answer is `want` (at most 5 s).
fn wait_for(stream: &mut TcpStream, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(stream);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_renamed(path: &Path, text: &str) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("{e}"));
}

fn wait_for_log(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the log never said {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The scenario both front doors run; `hup` sends SIGHUP to the server.
fn across_reloads(mut stream: TcpStream, config: &Path, log: &Path, hup: impl Fn()) {
    let port = stream.local_addr().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&mut stream), "i-00000000000000000");
    for (i, id) in [
        "i-11111111111111111",
        "i-22222222222222222",
        "i-33333333333333333",
    ]
    .iter()
    .enumerate()
    {
        if i % 2 == 0 {
            write_renamed(config, &config_with(id));
        } else {
            std::fs::write(config, config_with(id)).unwrap_or_else(|e| panic!("{e}"));
        }
        wait_for(&mut stream, id);
    }
    // Invalid: the last good configuration goes on serving, and the log names the path.
    let mut bad: serde_json::Value =
        serde_json::from_str(&config_with("i-44444444444444444")).unwrap_or_else(|e| panic!("{e}"));
    bad["server"]["maxHeaders"] = 0.into();
    write_renamed(config, &bad.to_string());
    let text = wait_for_log(log, "$.server.maxHeaders");
    assert!(
        text.contains("failed, still serving the previous configuration"),
        "{text}"
    );
    for _ in 0..5 {
        assert_eq!(get(&mut stream), "i-33333333333333333");
    }
    // SIGHUP reloads a (fixed) file as well.
    std::fs::write(config, config_with("i-55555555555555555")).unwrap_or_else(|e| panic!("{e}"));
    hup();
    wait_for(&mut stream, "i-55555555555555555");
    wait_for_log(log, "SIGHUP: reloaded");
    assert_eq!(stream.local_addr().ok(), Some(port), "the same connection");
}

#[test]
fn up_reloads_the_watched_file_without_resetting_connections() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let config = host.dir().join("config.json");
    std::fs::write(&config, config_with("i-00000000000000000")).unwrap_or_else(|e| panic!("{e}"));
    let log = host.dir().join("up.log");
    let up = Up::start_logged(&host, ["--config".as_ref(), config.as_os_str()], &log);
    let stream = host.in_netns(|| {
        TcpStream::connect("169.254.169.254:80").unwrap_or_else(|e| panic!("connect: {e}"))
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    across_reloads(stream, &config, &log, || up.signal(libc::SIGHUP));
    drop(up);
    // Neither side reset anything on any queue.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let exits: Vec<&str> = text.lines().filter(|l| l.contains("at exit")).collect();
    assert!(!exits.is_empty(), "no exit counters:\n{text}");
    for l in exits {
        assert!(
            l.contains("rst_received: 0,") && l.contains("rst_sent_abort: 0,"),
            "{l}"
        );
    }
}

#[test]
fn serve_reloads_the_watched_file_without_resetting_connections() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("config.json");
    std::fs::write(&config, config_with("i-00000000000000000")).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("serve.log");
    let server = support::Server::start_logged(Some(&config), [] as [&str; 0], &log);
    let stream = TcpStream::connect(&server.addr).unwrap_or_else(|e| panic!("connect: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    across_reloads(stream, &config, &log, || server.signal(libc::SIGHUP));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `imds-tun ctl ARGS` against `socket`: (exit code, stdout, stderr).
fn ctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ctl: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
    )
}

/// `imds_tun_config_reloads_total{result=...}` from the metrics endpoint (0 before the first).
fn reloads(metrics: &str, result: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-m", "5", &format!("http://{metrics}/metrics")])
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(out.status.success(), "scrape failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let series = format!("imds_tun_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series}{v}: {e}"))
        })
}

/// SIGHUP, the watched file and `ctl reload` are one reload: each is counted in the same
/// series and logged by its trigger; each also replaces the document live edits work on (an
/// unpersisted `ctl set` is gone after a reload, whoever triggered it); a `--persist` write is
/// not reloaded again by the watcher; an invalid file keeps both the snapshot and the document.
#[test]
fn serve_sighup_watcher_and_ctl_are_one_reload() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("reload-one-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("config.json");
    std::fs::write(&config, config_with("i-00000000000000000")).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("serve.log");
    let socket = dir.join("ctl.sock");
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let server = support::Server::start_logged(
        Some(&config),
        [
            "--ctl".as_ref(),
            socket.as_os_str(),
            "--metrics".as_ref(),
            metrics.as_ref(),
        ],
        &log,
    );
    let mut stream = TcpStream::connect(&server.addr).unwrap_or_else(|e| panic!("connect: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let role = ["get", "gce", "instance/attributes/role"];
    let set_role = ["set", "gce", "instance/attributes/role=web"];

    // The watched file: the edit is dropped, the file's value served.
    assert_eq!(ctl(&socket, &set_role).0, 0);
    assert_eq!(ctl(&socket, &role), (0, "web".into(), String::new()));
    write_renamed(&config, &config_with("i-11111111111111111"));
    wait_for(&mut stream, "i-11111111111111111");
    wait_for_log(&log, "configuration file changed: reloaded");
    assert_eq!(ctl(&socket, &role).0, 1, "the unpersisted edit survived");

    // SIGHUP: the same.
    assert_eq!(ctl(&socket, &set_role).0, 0);
    server.signal(libc::SIGHUP);
    wait_for_log(&log, "SIGHUP: reloaded");
    assert_eq!(
        ctl(&socket, &role).0,
        1,
        "the unpersisted edit survived SIGHUP"
    );

    // ctl reload: the same, and it says so.
    assert_eq!(ctl(&socket, &set_role).0, 0);
    let (code, out, _) = ctl(&socket, &["reload"]);
    assert_eq!((code, out.starts_with("reloaded ")), (0, true), "{out}");
    wait_for_log(&log, "ctl reload: reloaded");
    assert_eq!(
        ctl(&socket, &role).0,
        1,
        "the unpersisted edit survived ctl reload"
    );
    assert_eq!(reloads(&metrics, "ok"), 3);

    // A persisted edit is in the file: the watcher sees the rename and reloads nothing.
    let persist = ["set", "--persist", "gce", "instance/attributes/role=db"];
    assert_eq!(ctl(&socket, &persist).0, 0);
    std::thread::sleep(reload_settled());
    assert_eq!(
        reloads(&metrics, "ok"),
        3,
        "the persisted write was reloaded"
    );
    assert_eq!(ctl(&socket, &role), (0, "db".into(), String::new()));

    // Invalid, through the watcher: snapshot and document stay, counted as failed.
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    bad["server"]["maxHeaders"] = 0.into();
    bad["aws"]["metaData"]["instance-id"] = "i-22222222222222222".into();
    write_renamed(&config, &bad.to_string());
    wait_for_log(&log, "$.server.maxHeaders");
    assert_eq!(reloads(&metrics, "failed"), 1);
    assert_eq!(get(&mut stream), "i-11111111111111111");
    assert_eq!(ctl(&socket, &role), (0, "db".into(), String::new()));
    let (code, _, err) = ctl(&socket, &["reload"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("reload: nothing changed: $.server.maxHeaders"),
        "{err}"
    );
    assert_eq!(reloads(&metrics, "failed"), 2);
    assert_eq!(reloads(&metrics, "ok"), 3);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Long enough for the watcher to have seen and settled a change (`SETTLE` and some).
fn reload_settled() -> Duration {
    imds_tun::reload::SETTLE * 5
}

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
    let server = support::Server::start_logged(Some(&config), &[], &log);
    let stream = TcpStream::connect(&server.addr).unwrap_or_else(|e| panic!("connect: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    across_reloads(stream, &config, &log, || server.signal(libc::SIGHUP));
    let _ = std::fs::remove_dir_all(&dir);
}

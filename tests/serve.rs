//! The kernel-socket front door (`imds-tun serve`) at the socket level: keep-alive,
//! pipelining, HTTP/1.0, bounded heads, garbage and the idle timeout, each on a real TCP
//! connection to a running server.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const VMID: &str = "GET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text HTTP/1.1\r\nMetadata: true\r\n\r\n";

fn connect(server: &support::Server) -> TcpStream {
    let s = TcpStream::connect(&server.addr).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// Reads until the server closes; panics if it does not within the read timeout.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("server did not close: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads exactly `n` complete responses (Content-Length framed) from a keep-alive connection.
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Content-Length in {text:?}"));
            let total = head_end + 4 + len;
            if buf.len() >= total {
                out.push(String::from_utf8_lossy(&buf[..total]).into_owned());
                buf.drain(..total);
                continue;
            }
        }
        let k = s.read(&mut chunk).unwrap_or_else(|e| panic!("{e}"));
        assert!(k > 0, "connection closed after {} responses", out.len());
        buf.extend_from_slice(&chunk[..k]);
    }
    assert!(buf.is_empty(), "unexpected extra bytes");
    out
}

#[test]
fn keep_alive_and_pipelining() {
    let server = support::Server::start(None);
    let mut s = connect(&server);
    for _ in 0..3 {
        s.write_all(VMID.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let r = read_responses(&mut s, 1);
        assert!(r[0].starts_with("HTTP/1.1 200 OK\r\n"), "{}", r[0]);
    }
    // Ten requests in one write, answered in order on the same connection.
    let mut batch = String::new();
    for i in 0..10 {
        batch.push_str(if i % 2 == 0 {
            VMID
        } else {
            "GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n"
        });
    }
    s.write_all(batch.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let rs = read_responses(&mut s, 10);
    for (i, r) in rs.iter().enumerate() {
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{i}: {r}");
        assert_eq!(
            r.contains("i-"),
            i % 2 == 1,
            "response {i} out of order: {r}"
        );
    }
}

#[test]
fn http10_and_connection_close_are_closed_after_one_response() {
    let server = support::Server::start(None);
    for req in [
        "GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n".to_string(),
        VMID.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
    ] {
        let mut s = connect(&server);
        // A second request after the first must be ignored: the server closes.
        s.write_all(format!("{req}{VMID}").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let all = read_to_close(&mut s);
        assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
        assert!(all.contains("Connection: close\r\n"), "{all}");
    }
}

#[test]
fn oversized_heads_get_431_and_garbage_400_then_close() {
    let server = support::Server::start(None);
    let mut s = connect(&server);
    let long = format!(
        "GET /latest/meta-data/ HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(9000)
    );
    s.write_all(long.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let r = read_to_close(&mut s);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

    let mut s = connect(&server);
    let mut many = String::from("GET / HTTP/1.1\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    s.write_all(many.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let r = read_to_close(&mut s);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

    let mut s = connect(&server);
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let r = read_to_close(&mut s);
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");

    // The server is unaffected.
    let mut s = connect(&server);
    s.write_all(VMID.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(read_responses(&mut s, 1)[0].starts_with("HTTP/1.1 200 "));
}

#[test]
fn idle_and_header_timeouts_close_connections() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-timeouts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut cfg: serde_json::Value =
        serde_json::from_str(imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
    cfg["server"] = serde_json::json!({"idleTimeoutSecs": 1, "headerTimeoutSecs": 1});
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let server = support::Server::start(Some(&path));

    // Idle after a response.
    let mut s = connect(&server);
    s.write_all(VMID.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    read_responses(&mut s, 1);
    let start = Instant::now();
    assert_eq!(read_to_close(&mut s), "");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A request that trickles in a byte at a time (slowloris) is cut at the header timeout,
    // counted from its first byte.
    let mut s = connect(&server);
    s.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nX-Slow: ")
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(300));
        if s.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        s.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
        let r = s.read(&mut probe);
        s.set_nonblocking(false).unwrap_or_else(|e| panic!("{e}"));
        if matches!(r, Ok(0)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling request was not cut off");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

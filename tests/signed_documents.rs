//! Signed documents checked by an independent implementation, the openssl command line,
//! against a running `imds-tun serve`: Azure's attested document (`openssl cms -verify` with
//! the CA from `/imds-tun/ca.pem`, nonce included in what it prints), AWS's `pkcs7` and
//! `rsa2048` (`openssl smime -verify`, printing the identity document byte for byte) and AWS's
//! `signature` (`openssl dgst -sha256 -verify` with the key of `imds-tun ca --leaf aws`). Each
//! check is also made against a CA that did not sign, which must fail.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

/// The body of a `GET` (status 200 required).
fn get(server: &support::Server, path: &str, headers: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(&server.addr).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap_or_else(|e| panic!("{e}"));
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 "), "{path}: {head}");
    out[end + 4..].to_vec()
}

/// Runs openssl with `args`; (success, stdout, stderr).
fn openssl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for this test (tests/run installs it): {e}"));
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("signed-documents-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Files(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        path.display().to_string()
    }

    /// A CA certificate (and key) that signed nothing here.
    fn stranger_ca(&self) -> String {
        let cert = self.0.join("stranger.pem");
        let key = self.0.join("stranger.key");
        let (ok, _, err) = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=stranger",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ]);
        assert!(ok, "{err}");
        cert.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pem_pkcs7(base64_lines: &[u8]) -> Vec<u8> {
    let mut pem = b"-----BEGIN PKCS7-----\n".to_vec();
    pem.extend_from_slice(base64_lines);
    pem.extend_from_slice(b"\n-----END PKCS7-----\n");
    pem
}

#[test]
fn azure_attested_document_verifies_with_openssl() {
    let server = support::Server::start(None);
    let files = Files::new("azure");
    let ca = files.write("ca.pem", &get(&server, "/imds-tun/ca.pem", ""));
    let body = get(
        &server,
        "/metadata/attested/document?api-version=2021-02-01&nonce=4815162342",
        "Metadata: true\r\n",
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(answer["encoding"], "pkcs7");
    let der = base64::engine::general_purpose::STANDARD
        .decode(answer["signature"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let doc = files.write("attested.der", &der);

    for tool in ["cms", "smime"] {
        let (ok, content, err) = openssl(&[
            tool, "-verify", "-inform", "DER", "-in", &doc, "-CAfile", &ca,
        ]);
        assert!(ok, "openssl {tool} -verify: {err}");
        let content: serde_json::Value =
            serde_json::from_slice(&content).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(content["nonce"], "4815162342");
        assert_eq!(content["vmId"], "5f3c9d2e-8b7a-4e1f-a6d0-3c9b2e7f4a18");
        assert!(content["timeStamp"]["createdOn"]
            .as_str()
            .is_some_and(|t| t.ends_with(" -0000")));
    }
    // The signer is the metadata.azure.com certificate the document carries.
    let signer = files.0.join("signer.pem").display().to_string();
    let (ok, _, err) = openssl(&[
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        &doc,
        "-CAfile",
        &ca,
        "-signer",
        &signer,
        "-out",
        "/dev/null",
    ]);
    assert!(ok, "{err}");
    let (_, text, _) = openssl(&[
        "x509",
        "-in",
        &signer,
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
    ]);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("CN = metadata.azure.com") && text.contains("DNS:*.metadata.azure.com"),
        "{text}"
    );

    let stranger = files.stranger_ca();
    let (ok, _, _) = openssl(&[
        "cms", "-verify", "-inform", "DER", "-in", &doc, "-CAfile", &stranger,
    ]);
    assert!(!ok, "a CA that did not sign must not verify the document");
}

#[test]
fn aws_identity_signatures_verify_with_openssl() {
    let server = support::Server::start(None);
    let files = Files::new("aws");
    let ca = files.write("ca.pem", &get(&server, "/imds-tun/ca.pem", ""));
    let document = get(&server, "/latest/dynamic/instance-identity/document", "");
    let doc_path = files.write("document", &document);
    let stranger = files.stranger_ca();

    for name in ["pkcs7", "rsa2048"] {
        let body = get(
            &server,
            &format!("/latest/dynamic/instance-identity/{name}"),
            "",
        );
        let path = files.write(&format!("{name}.pem"), &pem_pkcs7(&body));
        let (ok, content, err) = openssl(&[
            "smime", "-verify", "-inform", "PEM", "-in", &path, "-CAfile", &ca,
        ]);
        assert!(ok, "openssl smime -verify {name}: {err}");
        assert_eq!(content, document, "{name} encapsulates the document");
        let (ok, _, _) = openssl(&[
            "smime", "-verify", "-inform", "PEM", "-in", &path, "-CAfile", &stranger,
        ]);
        assert!(!ok, "{name}: a CA that did not sign must not verify");
    }

    // `signature`: RSA-SHA256 over the document, checked with the AWS signer's public key,
    // as `imds-tun ca --leaf aws` prints it.
    let leaf = Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["ca", "--leaf", "aws", "--key-dir"])
        .arg(support::key_dir())
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(leaf.status.success());
    let leaf = files.write("aws.pem", &leaf.stdout);
    let (ok, _, err) = openssl(&["verify", "-CAfile", &ca, &leaf]);
    assert!(ok, "the AWS signer is issued by the CA: {err}");
    let (ok, public, err) = openssl(&["x509", "-pubkey", "-noout", "-in", &leaf]);
    assert!(ok, "{err}");
    let public = files.write("aws-public.pem", &public);
    let signature = get(&server, "/latest/dynamic/instance-identity/signature", "");
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .unwrap_or_else(|e| panic!("{e}"));
    let sig_path = files.write("signature.bin", &signature);
    let (ok, out, err) = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &public,
        "-signature",
        &sig_path,
        &doc_path,
    ]);
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "Verified OK");
    let tampered = files.write("tampered", &[&document[..], b" "].concat());
    let (ok, _, _) = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &public,
        "-signature",
        &sig_path,
        &tampered,
    ]);
    assert!(!ok, "a changed document must not verify");
}

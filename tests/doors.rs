//! The token doors besides IMDS, as root in a test host (never the machine's own files):
//! Azure Arc's HIMDS with azure-identity and MSAL Python (challenge, key file mode and group,
//! single use, removal, undo on exit), the App Service door with azure-identity, and the
//! legacy VM extension door with curl. Assertions about the clients live in
//! `tests/sdk/azure_doors.py`.
//!
//! The clients accept key files only in /var/opt/azcmagent/tokens, so every command runs with
//! /var/opt bind-mounted from a temporary directory, and /etc/group and /etc/gshadow from
//! temporary copies (without a `himds` group, so the door must add it and remove it again).

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::netns::{Shape, TestHost};
use support::up::Up;

/// The private files of the test host's mount namespaces.
struct PrivateFiles {
    var_opt: PathBuf,
    group: PathBuf,
    group_before: String,
    gshadow: Option<(PathBuf, String)>,
}

impl PrivateFiles {
    fn new(host: &TestHost) -> PrivateFiles {
        let var_opt = host.dir().join("var-opt");
        std::fs::create_dir_all(&var_opt).unwrap_or_else(|e| panic!("{e}"));
        let without_himds = |text: String| -> String {
            text.lines()
                .filter(|l| !l.starts_with("himds:"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let group = host.dir().join("group");
        let group_before = without_himds(std::fs::read_to_string("/etc/group").unwrap_or_default());
        std::fs::write(&group, &group_before).unwrap_or_else(|e| panic!("{e}"));
        let gshadow = std::fs::read_to_string("/etc/gshadow").ok().map(|t| {
            let path = host.dir().join("gshadow");
            let text = without_himds(t);
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            (path, text)
        });
        PrivateFiles {
            var_opt,
            group,
            group_before,
            gshadow,
        }
    }

    fn mounts(&self) -> Vec<(&Path, &str)> {
        let mut m = vec![
            (self.var_opt.as_path(), "/var/opt"),
            (self.group.as_path(), "/etc/group"),
        ];
        if let Some((p, _)) = &self.gshadow {
            m.push((p.as_path(), "/etc/gshadow"));
        }
        m
    }
}

struct Serve {
    child: Child,
    /// The lines after the ready line: comments and `export K=V`.
    env: Vec<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// The value of `export NAME=` in the block after the comment starting with `section`.
    fn export(&self, section: &str, name: &str) -> String {
        let start = self
            .env
            .iter()
            .position(|l| l.starts_with(section))
            .unwrap_or_else(|| panic!("no {section} in {:?}", self.env));
        self.env[start + 1..]
            .iter()
            .take_while(|l| l.starts_with("export "))
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {name} after {section} in {:?}", self.env))
    }
}

fn start(host: &TestHost, files: &PrivateFiles) -> Serve {
    let mut child = host
        .command_with_mounts(env!("CARGO_BIN_EXE_imds-tun"), &files.mounts())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--himds",
            "--app-service",
            "--legacy-msi",
        ])
        // The test host's own key directory: never the machine's /var/lib/imds-tun.
        .arg("--key-dir")
        .arg(host.dir().join("keys"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start imds-tun serve: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        ready.contains("serving"),
        "unexpected first line: {ready:?}"
    );
    let mut env = Vec::new();
    for line in lines.map_while(Result::ok) {
        let last = line.starts_with("# legacy");
        env.push(line);
        if last {
            break;
        }
    }
    Serve { child, env }
}

/// Runs `program args` in the test host with the private files; returns (success, stdout).
fn run(host: &TestHost, files: &PrivateFiles, program: &str, args: &[&str]) -> (bool, String) {
    let out = host
        .command_with_mounts(program, &files.mounts())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "{program} {args:?}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), text)
}

fn sdk_script(host: &TestHost, files: &PrivateFiles, mode: &str, env: &[(&str, String)]) {
    let python = support::python().display().to_string();
    let script = format!("{}/tests/sdk/azure_doors.py", env!("CARGO_MANIFEST_DIR"));
    let mut args: Vec<String> = vec![
        "-i".into(),
        format!("PATH={}", std::env::var("PATH").unwrap_or_default()),
        format!("HOME={}", host.dir().display()),
    ];
    args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    args.extend([python, script, mode.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run(host, files, "env", &args);
    assert!(ok, "azure_doors.py {mode} failed:\n{out}");
    support::assert_checks(mode, &out, 10);
}

#[test]
fn himds_app_service_and_legacy_doors() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let files = PrivateFiles::new(&host);
    let serve = start(&host, &files);

    // The group exists while the door is open; the key directory is root:himds 0750.
    let group_during = std::fs::read_to_string(&files.group).unwrap_or_default();
    let gid: u32 = group_during
        .lines()
        .find_map(|l| l.strip_prefix("himds:x:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no himds group added:\n{group_during}"));
    let tokens = files.var_opt.join("azcmagent/tokens");
    let mode = std::fs::metadata(&tokens)
        .unwrap_or_else(|e| panic!("{}: {e}", tokens.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "key directory mode");

    // Members of himds can read a key file; others cannot.
    let endpoint = serve.export("# Azure Arc", "IDENTITY_ENDPOINT");
    assert_eq!(
        endpoint,
        "http://localhost:40342/metadata/identity/oauth2/token"
    );
    let (_, head) = run(
        &host,
        &files,
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "Metadata: true",
            &format!("{endpoint}?api-version=2020-06-01&resource=https://management.azure.com"),
        ],
    );
    let realm = head
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: Basic realm="))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no challenge:\n{head}"));
    assert!(realm.starts_with("/var/opt/azcmagent/tokens/") && realm.ends_with(".key"));
    let as_nobody = |groups: &str| {
        run(
            &host,
            &files,
            "setpriv",
            &["--reuid=65534", "--regid=65534", groups, "cat", &realm],
        )
    };
    let (member_reads, secret) = as_nobody(&format!("--groups={gid}"));
    assert!(
        member_reads && secret.len() == 64,
        "a himds member must read the key"
    );
    assert!(
        !as_nobody("--clear-groups").0,
        "others must not read the key"
    );

    sdk_script(
        &host,
        &files,
        "arc",
        &[
            ("IDENTITY_ENDPOINT", endpoint.clone()),
            (
                "IMDS_ENDPOINT",
                serve.export("# Azure Arc", "IMDS_ENDPOINT"),
            ),
        ],
    );
    sdk_script(
        &host,
        &files,
        "appservice",
        &[
            (
                "IDENTITY_ENDPOINT",
                serve.export("# App Service", "IDENTITY_ENDPOINT"),
            ),
            (
                "IDENTITY_HEADER",
                serve.export("# App Service", "IDENTITY_HEADER"),
            ),
        ],
    );

    // The legacy extension endpoint, with curl.
    let legacy = "http://localhost:50342/oauth2/token?resource=https://vault.azure.net";
    let (ok, body) = run(
        &host,
        &files,
        "curl",
        &["-sS", "-m", "5", "-H", "Metadata: true", legacy],
    );
    let token: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert!(ok && token["access_token"].is_string(), "legacy: {body}");
    assert_eq!(token["resource"], "https://vault.azure.net");
    assert!(token["expires_in"].as_str().is_some_and(|s| !s.is_empty()));
    let (_, status) = run(
        &host,
        &files,
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            legacy,
        ],
    );
    assert_eq!(status, "400", "legacy without Metadata");

    // SIGTERM: key files, directories and the group are gone; the files are as before.
    // SAFETY: kill(2) with a pid we own.
    assert_eq!(
        unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) },
        0
    );
    wait_exit(serve, Duration::from_secs(10));
    let left: Vec<_> = std::fs::read_dir(&files.var_opt)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in /var/opt: {left:?}");
    assert_eq!(
        std::fs::read_to_string(&files.group).unwrap_or_default(),
        files.group_before,
        "/etc/group not restored"
    );
    if let Some((path, before)) = &files.gshadow {
        assert_eq!(
            &std::fs::read_to_string(path).unwrap_or_default(),
            before,
            "/etc/gshadow not restored"
        );
    }
}

fn wait_exit(mut serve: Serve, limit: Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = serve.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            assert!(status.success(), "serve exited with {status}");
            return;
        }
        assert!(start.elapsed() < limit, "serve did not exit in {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `up --himds` killed with SIGKILL leaves a key file, the key directory and the `himds` group
/// lines; they are in its record, and `down` removes them all (nothing changed on the host that
/// is not recorded and undone).
#[test]
fn down_after_kill_9_of_up_removes_himds_key_files_and_group() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let files = PrivateFiles::new(&host);
    let state = host.dir().join("state");
    let up = Up::start_in(
        &host,
        host.command_with_mounts(env!("CARGO_BIN_EXE_imds-tun"), &files.mounts()),
        ["--himds"],
        0,
    );
    // The challenge writes a key file.
    let (ok, headers) = run(
        &host,
        &files,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "Metadata: true",
            "http://localhost:40342/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https://management.azure.com/",
        ],
    );
    assert!(ok && headers.contains(" 401"), "{headers}");
    let tokens = files.var_opt.join("azcmagent/tokens");
    let keys: Vec<_> = std::fs::read_dir(&tokens)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 1, "one key file: {keys:?}");
    assert!(std::fs::read_to_string(&files.group)
        .unwrap_or_default()
        .contains("himds:"));
    // SAFETY: kill(2) with a pid we own.
    assert_eq!(
        unsafe { libc::kill(up.child.id() as i32, libc::SIGKILL) },
        0
    );
    let mut up = up;
    let _ = up.child.wait();
    assert!(keys[0].exists(), "the kill left the key file");
    let (ok, out) = run(
        &host,
        &files,
        env!("CARGO_BIN_EXE_imds-tun"),
        &["down", "--state-dir", &state.display().to_string()],
    );
    assert!(ok, "down failed: {out}");
    let left: Vec<_> = std::fs::read_dir(&files.var_opt)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in /var/opt: {left:?}");
    assert_eq!(
        std::fs::read_to_string(&files.group).unwrap_or_default(),
        files.group_before,
        "/etc/group not restored"
    );
    if let Some((path, before)) = &files.gshadow {
        assert_eq!(
            &std::fs::read_to_string(path).unwrap_or_default(),
            before,
            "/etc/gshadow not restored"
        );
    }
    let journal: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !journal
            .iter()
            .any(|n| n.to_string_lossy().contains("himds")),
        "journal left: {journal:?}"
    );
}

//! install/: the systemd unit passes `systemd-analyze verify` (and its offline security
//! review), `up` speaks the notification protocol the unit relies on, `install.sh` then
//! `install.sh --uninstall` leave a throwaway root exactly as it was, the Kubernetes
//! manifests pass schema validation, the Containerfile parses with BuildKit's parser and the
//! compose example with the compose-spec schema.
//!
//! The validators come from PyPI (tests/install/requirements.txt) into a venv under target/;
//! systemd-analyze and shellcheck from Debian (tests/run installs them).

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::netns::{require_root, Shape, TestHost};
use support::up::Up;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_imds-tun")
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("install-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn validators() -> PathBuf {
    support::venv("install-venv", "tests/install/requirements.txt")
}

/// Runs `systemd-analyze ARGS UNIT` in a private mount namespace whose /usr/local/bin holds
/// this build as imds-tun (verify checks that ExecStart's binary exists).
fn systemd_analyze(args: &[&str], unit: &Path) -> Output {
    require_root();
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is missing: apt-get install systemd (tests/run does)"
    );
    output(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"mount -t tmpfs tmpfs /usr/local/bin && cp "$0" /usr/local/bin/imds-tun && exec systemd-analyze "$@""#,
            )
            .arg(bin())
            .args(args)
            .arg(unit),
    )
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let unit = repo().join("install/imds-tun.service");
    let out = systemd_analyze(&["verify", "--man=no"], &unit);
    assert_ok("systemd-analyze verify", &out);
    // verify exits 0 on unknown keys and only warns: the unit must produce no warning at all.
    assert_eq!(text(&out.stderr), "", "systemd-analyze verify warned");
    assert_eq!(text(&out.stdout), "");

    // The same check catches a misspelt directive (the test can fail).
    let dir = scratch("unit");
    let bad = dir.join("imds-tun.service");
    let content = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&bad, content.replace("Type=notify", "Tpye=notify"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = systemd_analyze(&["verify", "--man=no"], &bad);
    assert!(
        text(&out.stderr).contains("Unknown key"),
        "{}",
        text(&out.stderr)
    );

    // The hardening, as systemd itself scores it (0 = most, 10 = least confined).
    let out = systemd_analyze(&["security", "--offline=true", "--no-pager"], &unit);
    let report = text(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for imds-tun.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}\n{}", text(&out.stderr)));
    assert!(score <= 3.0, "exposure {score} (was 2.8):\n{report}");
}

#[test]
fn up_notifies_systemd_only_once_answering_and_on_reload_and_stop() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let socket = host.dir().join("notify.sock");
    let listener = UnixDatagram::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
    listener
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = host.dir().join("access.log");
    let mut command = host.command(bin());
    command.env("NOTIFY_SOCKET", &socket);
    let up = Up::start_in(
        &host,
        command,
        ["--access-log".to_string(), log.display().to_string()],
        0,
    );
    let recv = || {
        let mut buf = [0u8; 256];
        let n = listener
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification: {e}"));
        text(&buf[..n])
    };
    assert_eq!(recv(), "READY=1");
    // READY came after up's own request to 169.254.169.254 was answered through the device.
    let deadline = Instant::now() + Duration::from_secs(2);
    let probe = " imds_tun keys GET /imds-tun/jwks 200 ";
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(probe)
    {
        assert!(
            Instant::now() < deadline,
            "no readiness request in the access log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    up.signal(libc::SIGHUP);
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(recv(), "READY=1");
    up.signal(libc::SIGTERM);
    assert_eq!(recv(), "STOPPING=1");
    assert!(up.wait(Duration::from_secs(10)).success());
}

/// Every path under `root`, with its type and mode (a leftover or a changed directory shows).
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}"));
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{e}"));
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            use std::os::unix::fs::PermissionsExt;
            out.insert(format!("{rel} {:o}", meta.permissions().mode()));
            if meta.is_dir() {
                walk(&path, root, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn install_sh(root: &Path, args: &[&str]) -> Output {
    output(
        Command::new(repo().join("install/install.sh"))
            .args(["--root"])
            .arg(root)
            .args(args),
    )
}

#[test]
fn install_then_uninstall_leaves_the_root_as_it_was() {
    let root = scratch("root");
    // A root with some of the directories already there (they must stay) and a file of the
    // user's own in one of them.
    for d in ["etc/systemd/system", "usr/local/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(root.join("usr/local/bin/other-tool"), "#!/bin/sh\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let before = tree(&root);

    let out = install_sh(&root, &["--binary", bin()]);
    assert_ok("install.sh", &out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("undo with: "), "{stdout}");
    for path in [
        "usr/local/bin/imds-tun",
        "etc/systemd/system/imds-tun.service",
        "etc/imds-tun/config.json",
        "usr/local/share/man/man1/imds-tun.1",
        "usr/local/share/bash-completion/completions/imds-tun",
        "usr/local/share/imds-tun/install-manifest",
    ] {
        assert!(root.join(path).exists(), "{path} not installed:\n{stdout}");
    }
    let config = root.join("etc/imds-tun/config.json");
    assert_ok(
        "imds-tun check of the installed config",
        &output(Command::new(bin()).arg("check").arg(&config)),
    );
    // A second install is idempotent and keeps the configuration.
    assert_ok("install.sh again", &install_sh(&root, &["--binary", bin()]));

    let out = install_sh(&root, &["--uninstall"]);
    assert_ok("install.sh --uninstall", &out);
    assert_eq!(tree(&root), before, "uninstall left the root changed");

    // An edited configuration survives --uninstall, and --purge removes it.
    assert_ok("install.sh", &install_sh(&root, &["--binary", bin()]));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .and_then(|mut f| f.write_all(b"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = install_sh(&root, &["--uninstall"]);
    assert_ok("install.sh --uninstall", &out);
    assert!(config.exists(), "an edited configuration was removed");
    assert!(
        text(&out.stdout).contains("it was edited"),
        "{}",
        text(&out.stdout)
    );
    assert_ok("install.sh", &install_sh(&root, &["--binary", bin()]));
    assert_ok(
        "install.sh --uninstall --purge",
        &install_sh(&root, &["--uninstall", "--purge"]),
    );
    assert_eq!(tree(&root), before, "purge left the root changed");

    // Nothing to uninstall is an error, and a foreign file is never overwritten.
    assert!(!install_sh(&root, &["--uninstall"]).status.success());
    std::fs::write(root.join("usr/local/bin/imds-tun"), "someone else's\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = install_sh(&root, &["--binary", bin()]);
    assert!(!out.status.success(), "overwrote a file it did not install");
    assert!(text(&out.stderr).contains("was not installed by this script"));
}

#[test]
fn install_script_passes_shellcheck() {
    let out = Command::new("shellcheck")
        .arg(repo().join("install/install.sh"))
        .output()
        .unwrap_or_else(|e| panic!("shellcheck is missing ({e}): apt-get install shellcheck"));
    assert_ok("shellcheck install/install.sh", &out);
}

#[test]
fn kubernetes_manifests_pass_schema_validation() {
    let python = validators();
    let validate = python.with_file_name("kubernetes-validate");
    let dir = repo().join("install/kubernetes");
    let files = ["namespace.yaml", "configmap.yaml", "daemonset.yaml"];
    let out = output(
        Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.30.0"])
            .args(files.iter().map(|f| dir.join(f))),
    );
    assert_ok("kubernetes-validate", &out);
    assert_eq!(
        text(&out.stdout).matches(" passed for resource ").count(),
        3,
        "{}",
        text(&out.stdout)
    );

    // A misspelt field fails (strict validation sees it).
    let scratch = scratch("k8s");
    let bad = scratch.join("daemonset.yaml");
    let ds = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&bad, ds.replace("hostNetwork: true", "hostNetworks: true"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = output(Command::new(&validate).arg("--strict").arg(&bad));
    assert!(!out.status.success(), "a misspelt field passed");

    // The configuration in the ConfigMap is one imds-tun accepts.
    let config = scratch.join("config.json");
    let out = output(
        Command::new(&python)
            .args([
                "-c",
                "import sys, yaml; open(sys.argv[2], 'w').write(yaml.safe_load(open(sys.argv[1]))['data']['config.json'])",
            ])
            .arg(dir.join("configmap.yaml"))
            .arg(&config),
    );
    assert_ok("extracting config.json", &out);
    assert_ok(
        "imds-tun check of the ConfigMap",
        &output(Command::new(bin()).arg("check").arg(&config)),
    );
}

#[test]
fn containerfile_parses_and_compose_example_validates() {
    let python = validators();
    // BuildKit's parser; then what the image must be: multi-stage, an empty-ish final image
    // with the binary as its exec-form entrypoint, no shell form anywhere it runs.
    let check = r#"
import sys, dockerfile
cmds = dockerfile.parse_file(sys.argv[1])
froms = [c for c in cmds if c.cmd == 'FROM']
assert len(froms) >= 2, 'not multi-stage'
final = cmds[cmds.index(froms[-1]):]
assert froms[-1].value[0].startswith('gcr.io/distroless/static'), froms[-1].value
entry = [c for c in final if c.cmd == 'ENTRYPOINT']
assert entry and entry[-1].json and entry[-1].value[0] == '/usr/local/bin/imds-tun', entry
assert not [c for c in final if c.cmd == 'RUN'], 'RUN in the final image (it has no shell)'
health = [c for c in final if c.cmd == 'HEALTHCHECK']
assert health and 'status' in health[-1].value[-1], health
copies = [c for c in final if c.cmd == 'COPY']
assert any('--from=build' in c.flags for c in copies), copies
print('ok', len(cmds), 'instructions')
"#;
    let out = output(
        Command::new(&python)
            .args(["-c", check])
            .arg(repo().join("install/Containerfile")),
    );
    assert_ok("Containerfile check", &out);
    let out = output(
        Command::new(python.with_file_name("check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(repo().join("install/compose.yaml")),
    );
    assert_ok("compose.yaml against the compose spec", &out);
}
